"""The V-IRL tab (Gradio): pick a route and action space, read the instructions, watch the map,
see the text observation or the 2×2 street views, and walk the route with action buttons.

The Observation choice is the tab's one vision toggle: what you see and what the models get.
`models_slot` and `columns_slot` are filled by `app.ui.models_panel` (models' controls and columns; their walks are
drawn on this tab's map). Handlers return dicts keyed by component.
"""
from __future__ import annotations

from dataclasses import replace

import gradio as gr

from . import virl_play as vp
from .common import URL_UPDATE_JS, error_html, query_params

MAX_ACTION_BUTTONS = 10


def build(vision_note: str | None = None) -> dict:
    """`vision_note`: shown under Observation when no configured model serves virl-vl."""
    state = gr.State(None)
    finding_slot = gr.Column(elem_id="virl-finding-slot")  # the landing page's finding (app.ui.landing)
    with gr.Row(elem_classes="sv-controls", equal_height=True):
        source = gr.Dropdown(vp.SOURCE_CHOICES, value="bundled:helsinki", label="Routes", scale=3, min_width=260,
                             elem_id="virl-source")
        route = gr.Textbox(label="Route #", value="0", max_lines=1, scale=1, min_width=80, max_length=40,
                           elem_id="virl-route")
        space = gr.Radio([("Absolute (N, E …)", "absolute"), ("Relative (left …)", "relative")],
                         value="absolute", label="Action space", scale=3, min_width=280, elem_id="virl-space")
        view = gr.Radio([("Text (L)", "text"), ("Street views (VL)", "image")], value="text",
                        label="Observation (you and the models)", scale=3, min_width=260, info=vision_note,
                        elem_id="virl-view")
    with gr.Row(elem_classes="sv-actions") as deal_row:   # "Show me the difference" joins it
        start = gr.Button("Start route", variant="primary", elem_id="virl-start")
        oracle = gr.Button("Show the right move", elem_id="virl-oracle")
    models_slot = gr.Column(elem_id="virl-models-slot")
    error = gr.HTML("", elem_id="virl-error", elem_classes="sv-collapse")
    status = gr.HTML("", elem_id="virl-status")
    link = gr.JSON(visible=False)
    with gr.Row(equal_height=False, elem_classes="sv-virl-row"):
        with gr.Column(scale=3):
            instructions = gr.HTML("", elem_id="virl-instructions")
            obs_text = gr.Textbox(label="Observation and action history (what the text model reads)",
                                  lines=6, interactive=False, elem_id="virl-obs")
            obs_image = gr.Image(label="2×2 street views (what the vision model sees)", visible=False,
                                 type="pil", interactive=False, elem_id="virl-grid", height=420)
            with gr.Row(elem_id="virl-action-row"):
                buttons = [gr.Button("", size="sm", visible=False, elem_classes="sv-action-btn",
                                     elem_id=f"virl-act-{i}") for i in range(MAX_ACTION_BUTTONS)]
            log = gr.HTML("", elem_id="virl-log", elem_classes="sv-collapse")
            # the models' columns sit under your walk, beside the map (which stays on screen); Run
            # and "Show me the difference" scroll to here (its note first)
            difference_slot = gr.Column(elem_id="virl-difference-slot")
            columns_slot = gr.Column(elem_id="virl-columns-slot")
        with gr.Column(scale=2, elem_classes="sv-map-col"):
            map_img = gr.Image(label="Map (© OpenStreetMap contributors, ODbL)", type="pil", format="png",
                               interactive=False, elem_id="virl-map", height=460)
            legend = gr.HTML(vp.legend_html(), elem_id="virl-legend")
            hint = gr.HTML("", elem_id="virl-hint", elem_classes="sv-collapse")

    def render(walk: vp.Walk) -> dict:
        ep = vp.episode_of(walk)
        actions = vp.action_choices(walk.absolute)
        out = {state: walk, error: "", status: vp.status_html(ep), instructions: vp.instructions_html(ep),
               obs_text: gr.Textbox(value=vp.observation_text(ep), visible=walk.view == "text"),
               obs_image: gr.Image(value=vp.grid_image(ep, walk.source) if walk.view == "image" else None,
                                   visible=walk.view == "image"),
               log: vp.log_html(ep), map_img: vp.map_image(ep, walk.source), legend: vp.legend_html(),
               hint: "", link: walk.link(),
               source: walk.source, route: str(walk.route), space: "absolute" if walk.absolute else "relative",
               view: walk.view}
        out.update({b: gr.Button(value=a, visible=True, interactive=not ep.done) for b, a in zip(buttons, actions)})
        out.update({b: gr.Button(visible=False) for b in buttons[len(actions):]})
        return out

    outputs = [state, error, status, instructions, obs_text, obs_image, log, map_img, legend, hint, link,
               source, route, space, view, *buttons]

    def on_start(source_v, route_v, space_v, view_v):
        try:
            return render(vp.new_walk(source_v, route_v, space_v == "absolute", view=view_v))
        except vp.InputError as exc:
            return {error: error_html(str(exc))}

    def on_act(walk, action):
        if walk is None:
            return {error: error_html("Start a route first.")}
        try:
            return render(vp.act(walk, action))
        except vp.InputError as exc:
            return {error: error_html(str(exc))}

    def on_view(walk, view_v):
        if walk is None or walk.view == view_v:
            return gr.skip()
        return render(replace(walk, view=view_v))

    def on_oracle(walk):
        if walk is None:
            return error_html("Start a route first.")
        ep = vp.episode_of(walk)
        if ep.done:
            return '<div class="sv-hint">This walk is over: start the route again.</div>'
        return f'<div class="sv-hint">The right move here: <code>{ep.entry.gt_action}</code></div>'

    def on_space(walk, source_v, route_v, space_v, view_v):
        """Choosing the action space takes effect at once: the route starts again under it."""
        if walk is not None and walk.absolute == (space_v == "absolute") and walk.source == source_v:
            return gr.skip()
        return on_start(source_v, route_v, space_v, view_v)

    gr.on([start.click, route.submit], on_start, [source, route, space, view], outputs
          ).then(None, link, None, js=URL_UPDATE_JS)
    gr.on([space.input, source.input], on_space, [state, source, route, space, view], outputs
          ).then(None, link, None, js=URL_UPDATE_JS)
    view.input(on_view, [state, view], outputs).then(None, link, None, js=URL_UPDATE_JS)
    for btn in buttons:
        btn.click(on_act, [state, btn], outputs)
    oracle.click(on_oracle, state, hint)

    def on_load(request: gr.Request):
        """The route the link names, or route 0 (the tab is never empty); a bad link says why."""
        try:
            walk = vp.walk_from_link(query_params(request)) or vp.Walk()
        except vp.InputError as exc:
            out = render(vp.Walk())
            out[error] = error_html(f"This link could not be restored: {exc}. Showing route 0.")
            return out
        return render(walk)

    return {"state": state, "map": map_img, "legend": legend, "view": view, "link": link,
            "models_slot": models_slot, "columns_slot": columns_slot, "finding_slot": finding_slot,
            "difference_slot": difference_slot, "deal_row": deal_row,
            "on_load": on_load, "load_outputs": outputs, "show": render, "outputs": outputs}
