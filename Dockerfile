# The playground in one image: REST API + Gradio UI on port 7860 (what `make run` serves).
#   CPU (default, runs the bundled tiny checkpoints in-process):
#     docker build -t sftvsrl .  &&  docker run -p 7860:7860 sftvsrl
#   GPU hosts (adds vLLM to serve the paper's checkpoints; Mllama needs vLLM <= 0.10.2):
#     docker build --build-arg WITH_VLLM=1 -t sftvsrl:gpu .
#     docker run --gpus all -p 7860:7860 sftvsrl:gpu \
#       sh -c "sftvsrl vllm up --sft /ckpt/sft --rl /ckpt/rl --write-config /data/models.toml & \
#              sftvsrl serve --host 0.0.0.0 --models /data/models.toml"
# Everything is fetched at build time; the running container downloads nothing.
FROM python:3.11-slim

ARG WITH_VLLM=0
ARG VLLM_VERSION=0.10.2
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SFTVSRL_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY game ./game
COPY models ./models
COPY app ./app
COPY static ./static

RUN if [ "$WITH_VLLM" = "1" ]; then \
        pip install "vllm==${VLLM_VERSION}" && \
        pip install --no-deps -e . && \
        pip install numpy pillow gymnasium geopy "transformers>=4.46" "tokenizers>=0.20" "safetensors>=0.4" \
                    "httpx>=0.27" "fastapi>=0.115" "uvicorn>=0.30" "gradio>=6,<7" matplotlib tqdm ; \
    else \
        pip install --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" && \
        pip install -e ".[models,web]" ; \
    fi

RUN useradd --create-home --uid 1000 playground && mkdir -p /data && chown playground /data
USER playground
VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/api/health')"
CMD ["sftvsrl", "serve", "--host", "0.0.0.0", "--port", "7860"]
