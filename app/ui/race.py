"""Race mode on 24 Points: you against the models on the hand on screen.

"Race them" starts a clock on the page and runs the models; your time is measured on the server
from the start to your first correct Check and shown beside your verdict, the models' times in
their columns. Everything about the race lives here; `gp_tab` gives it a slot in "You play" and
its Check triggers, `models_panel` its Run function and Stop.
"""
from __future__ import annotations

import time

import gradio as gr

from . import gp_play as play

# The page's clock ticks from the click: it waits for the race line (drawn by the server a moment
# later), then counts until your result appears or the race line goes (a new hand).
RACE_CLOCK_JS = """
(...args) => {
  const start = Date.now();
  let seen = false;
  clearInterval(window.__svRaceTimer);
  window.__svRaceTimer = setInterval(() => {
    const clock = document.getElementById('gp-race-clock');
    if (document.querySelector('#gp-race-out .sv-race-result') || (seen && !clock)) {
      clearInterval(window.__svRaceTimer); return;
    }
    if (!clock) return;
    seen = true;
    clock.textContent = ((Date.now() - start) / 1000).toFixed(1) + ' s';
  }, 100);
  if (window.svShowResults) window.svShowResults('gp-info', '#gp-col-0 .sv-col');
  return args;
}
"""


def add(panel, gp: dict) -> None:
    """The race button (next to Run models), its clock and your result."""
    race = gr.State(None)  # (deal_id, rule, start time) while a race is on
    with panel.actions:
        button = gr.Button("Race them", scale=1, min_width=110, elem_id="gp-race")
    with gp["race_slot"]:
        out = gr.HTML("", elem_id="gp-race-out")

    def start(table):
        if table is None:
            return {out: '<div class="sv-race">Deal a hand first.</div>'}
        return {race: (table.deal_id, table.rule, time.time()), gp["formula"]: "", gp["verdict"]: "",
                out: '<div class="sv-race">Race on: <b id="gp-race-clock">0.0 s</b> — solve it before the '
                     'models do!</div>'}

    def finish(table, formula, race_v):
        if not race_v or table is None or race_v[:2] != (table.deal_id, table.rule):
            return gr.skip()
        if not play.check_html(table, formula)[1]:
            return gr.skip()
        return {race: None, out: f'<div class="sv-race-result">You solved it in <b>{time.time() - race_v[2]:.1f} s'
                                 '</b> — compare with the models\' times in their columns.</div>'}

    event = button.click(start, gp["state"], [race, gp["formula"], gp["verdict"], out], js=RACE_CLOCK_JS
                         ).then(panel.run_models, panel.inputs, panel.outputs, concurrency_limit=None)
    panel.events.append(event)
    gr.on(gp["check_triggers"], finish, [gp["state"], gp["formula"], race], [race, out])

    def on_new_hand(table, race_v):  # another hand or rule ends the race (hints keep it)
        if table is not None and race_v and race_v[:2] == (table.deal_id, table.rule):
            return gr.skip()
        return {out: "", race: None}

    gp["state"].change(on_new_hand, [gp["state"], race], [out, race], show_progress="hidden")
