"""The V-IRL tab (Gradio): pick a route and action space, read the instructions, watch the map,
see the text observation or the 2×2 street views, and walk the route with action buttons."""
from __future__ import annotations

import gradio as gr

from . import virl_play as vp
from .common import URL_UPDATE_JS, error_html, query_params

MAX_ACTION_BUTTONS = 10


def build() -> dict:
    state = gr.State(None)
    with gr.Row(elem_classes="sv-controls"):
        source = gr.Dropdown(vp.SOURCE_CHOICES, value="bundled:helsinki", label="Routes", scale=3,
                             elem_id="virl-source")
        route = gr.Textbox(label="Route #", value="0", max_lines=1, scale=1, elem_id="virl-route")
        space = gr.Radio([("Absolute (north, east …)", "absolute"), ("Relative (left, right …)", "relative")],
                         value="absolute", label="Action space", scale=3, elem_id="virl-space")
        view = gr.Radio([("Text (V-IRL-L)", "text"), ("Street views (V-IRL-VL)", "image")], value="text",
                        label="Observation", scale=2, elem_id="virl-view")
    with gr.Row(elem_classes="sv-actions"):
        start = gr.Button("Start route", variant="primary", elem_id="virl-start")
        oracle = gr.Button("Show the right move", elem_id="virl-oracle")
    error = gr.HTML("", elem_id="virl-error")
    status = gr.HTML("", elem_id="virl-status")
    link = gr.JSON(visible=False)
    with gr.Row():
        with gr.Column(scale=3):
            instructions = gr.HTML("", elem_id="virl-instructions")
            obs_text = gr.Textbox(label="Observation and action history (what the text model reads)",
                                  lines=6, interactive=False, elem_id="virl-obs")
            obs_image = gr.Image(label="2×2 street views (what the vision model sees)", visible=False,
                                 type="pil", interactive=False, elem_id="virl-grid", height=420)
            with gr.Row(elem_id="virl-action-row"):
                buttons = [gr.Button("", size="sm", visible=False, elem_classes="sv-action-btn",
                                     elem_id=f"virl-act-{i}") for i in range(MAX_ACTION_BUTTONS)]
            log = gr.HTML("", elem_id="virl-log")
        with gr.Column(scale=2):
            map_img = gr.Image(label="Map (© OpenStreetMap contributors, ODbL)", type="pil",
                               interactive=False, elem_id="virl-map", height=460)
            hint = gr.HTML("", elem_id="virl-hint")

    def render(walk: vp.Walk, view_mode: str):
        ep = vp.episode_of(walk)
        actions = vp.action_choices(walk.absolute)
        btns = [gr.Button(value=a, visible=True, interactive=not ep.done) for a in actions]
        btns += [gr.Button(visible=False)] * (MAX_ACTION_BUTTONS - len(btns))
        image = gr.Image(value=vp.grid_image(ep, walk.source) if view_mode == "image" else None,
                         visible=view_mode == "image")
        return (walk, "", vp.status_html(ep), vp.instructions_html(ep),
                gr.Textbox(value=vp.observation_text(ep), visible=view_mode == "text"), image,
                vp.log_html(ep), vp.map_image(ep, walk.source), "", walk.link(), *btns)

    outputs = [state, error, status, instructions, obs_text, obs_image, log, map_img, hint, link, *buttons]

    def on_start(source_v, route_v, space_v, view_v):
        try:
            return render(vp.new_walk(source_v, route_v, space_v == "absolute"), view_v)
        except vp.InputError as exc:
            return (gr.skip(), error_html(str(exc))) + (gr.skip(),) * (len(outputs) - 2)

    def on_act(walk, view_v, action):
        if walk is None:
            return (gr.skip(), error_html("Start a route first.")) + (gr.skip(),) * (len(outputs) - 2)
        try:
            return render(vp.act(walk, action), view_v)
        except vp.InputError as exc:
            return (gr.skip(), error_html(str(exc))) + (gr.skip(),) * (len(outputs) - 2)

    def on_view(walk, view_v):
        if walk is None:
            return (gr.skip(),) * len(outputs)
        return render(walk, view_v)

    def on_oracle(walk):
        if walk is None:
            return ""
        ep = vp.episode_of(walk)
        if ep.done:
            return ""
        return f'<div class="sv-hint">The right move here: <code>{ep.entry.gt_action}</code></div>'

    inputs = [source, route, space, view]
    start.click(on_start, inputs, outputs).then(None, link, None, js=URL_UPDATE_JS)
    route.submit(on_start, inputs, outputs).then(None, link, None, js=URL_UPDATE_JS)
    view.change(on_view, [state, view], outputs)
    for btn in buttons:
        btn.click(on_act, [state, view, btn], outputs)
    oracle.click(on_oracle, state, hint)

    def on_load(request: gr.Request):
        try:
            walk = vp.walk_from_link(query_params(request))
        except vp.InputError as exc:  # e.g. a deep link naming a server directory
            skip = [gr.skip()] * (4 + len(outputs))
            skip[4 + outputs.index(error)] = error_html(str(exc))
            return tuple(skip)
        if walk is None:
            return (gr.skip(),) * (4 + len(outputs))
        return (walk.source, str(walk.route), "absolute" if walk.absolute else "relative", "text",
                *render(walk, "text"))

    return {"state": state, "on_load": on_load, "load_outputs": [source, route, space, view, *outputs]}
