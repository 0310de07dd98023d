"""The playground UI: one Gradio Blocks app with tabs, mounted at `/` of the FastAPI process.

`build_ui(services)` builds the Blocks; `mount_ui(app, services)` mounts it with our CSS, a
theme that uses only local fonts (nothing is fetched from a CDN), presenter mode and keyboard
shortcuts. Deep links (`?tab=gp&deal=HKC5D2C4&rule=face_jqk`, `?tab=virl&route=3`) restore a hand
or a route on load, and the URL follows what is on screen.
"""
from pathlib import Path

import gradio as gr

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
TITLE = "SFT vs RL — Playground"

SHORTCUTS_JS = """
<script>
(() => {
  const click = (id) => { const el = document.getElementById(id); if (el) { el.click(); return true; } return false; };
  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const key = ev.key.toLowerCase();
    if (key === 'n' && click('gp-next')) ev.preventDefault();
    else if (key === 'f' && click('gp-flip')) ev.preventDefault();
    else if (key === 'r' && click('gp-run')) ev.preventDefault();
    else if (key === 'p') { const box = document.querySelector('#sv-presenter-toggle input'); if (box) { box.click(); ev.preventDefault(); } }
  });
})();
</script>
"""

PRESENTER_JS = """
(on) => { document.body.classList.toggle('sv-presenter', !!on); return []; }
"""


def css() -> str:
    return (STATIC_DIR / "ui.css").read_text(encoding="utf-8")


def theme():
    # System font stacks only: a GoogleFont here would make the browser fetch from the internet.
    return gr.themes.Soft(primary_hue="emerald", neutral_hue="slate",
                          font=["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"],
                          font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])


def build_ui(services=None):
    """The Blocks app. `services` gives model runs, the episode store and evaluations (may be None
    for a people-only UI, e.g. in tests of the engines' tabs)."""
    from . import gp_tab, virl_tab

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        with gr.Row(elem_id="sv-header"):
            gr.HTML(f'<div class="sv-title"><h1>{TITLE}</h1><p>Chu et al., 2025: "SFT Memorizes, RL '
                    'Generalizes" — the paper\'s two tasks, played by you and by the SFT and RL models, '
                    'under in-distribution and out-of-distribution rules.</p></div>')
            presenter = gr.Checkbox(label="Presenter mode (P)", value=False, elem_id="sv-presenter-toggle",
                                    scale=0, min_width=180)
        presenter.change(None, presenter, None, js=PRESENTER_JS)
        with gr.Tabs(selected="gp", elem_id="sv-tabs") as tabs:
            with gr.Tab("24 Points", id="gp", elem_id="tab-gp"):
                gp = gp_tab.build()
                if services is not None:
                    from .models_panel import add_gp_models

                    add_gp_models(services, gp)
            with gr.Tab("V-IRL", id="virl", elem_id="tab-virl"):
                virl = virl_tab.build()
                if services is not None:
                    from .models_panel import add_virl_models

                    add_virl_models(services, virl)
            if services is not None:
                from . import evaluate_tab, inspect_tab, models_tab

                with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                    inspect = inspect_tab.build(services)
                with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                    evaluate_tab.build(services)
                with gr.Tab("Models", id="models", elem_id="tab-models") as models_ui:
                    models_tab.build(services, models_ui)
        gr.HTML('<footer class="sv-footer">Map data © OpenStreetMap contributors (ODbL) · card art and '
                'street views drawn by this project · runs offline</footer>')

        def on_load(request: gr.Request):
            from .common import query_params

            params = query_params(request)
            tab = params.get("tab", "gp")
            valid = {"gp", "virl"} | ({"inspect", "evaluate", "models"} if services is not None else set())
            return (gr.Tabs(selected=tab if tab in valid else "gp"), *gp["on_load"](request),
                    *virl["on_load"](request))

        extra_loads = []
        if services is not None:
            extra_loads = [inspect]
        load_outputs = [tabs, *gp["load_outputs"], *virl["load_outputs"]]
        for part in extra_loads:
            load_outputs += part["load_outputs"]

        def on_load_all(request: gr.Request):
            out = list(on_load(request))
            for part in extra_loads:
                out += list(part["on_load"](request))
            return tuple(out)

        demo.load(on_load_all, None, load_outputs)
    return demo


def mount_ui(app, services=None, *, path: str = "/", root_path: str | None = None):
    """Mount the UI on a FastAPI app (API routes stay where they are)."""
    demo = build_ui(services)
    return gr.mount_gradio_app(app, demo, path=path, root_path=root_path, theme=theme(), css=css(),
                               head=SHORTCUTS_JS, footer_links=["api"], show_error=False)


def create_app_with_ui(settings=None, *, root_path: str | None = None):
    """The whole product in one FastAPI app: REST API under /api, docs at /docs, the UI at /."""
    from ..main import create_app

    app = create_app(settings, placeholder=False)
    return mount_ui(app, app.state.ctx, root_path=root_path or None)
