"""The 24 Points tab (Gradio): deal, play yourself, hints, flip the rule, deep links.

Model columns (SFT vs RL side by side) are added by `app.ui.models_panel.add_model_columns`,
which drives the shared episode runner; this module owns the person-facing part.
"""
from __future__ import annotations

import time

import gradio as gr

from . import gp_play as play
from .common import URL_UPDATE_JS, error_html, query_params


def _render(table: play.Table):
    return play.hand_html(table), play.info_html(table)


def build(*, default_seed: int = 7) -> dict:
    """Build the tab's components inside the current Blocks context; returns them by name."""
    state = gr.State(None)
    with gr.Row(elem_classes="sv-controls"):
        seed = gr.Textbox(label="Seed", value=str(default_seed), max_lines=1, scale=1, elem_id="gp-seed")
        rule = gr.Radio(play.RULE_CHOICES, value="face10", label="Face cards", scale=3, elem_id="gp-rule")
        target = gr.Textbox(label="Target", value="24", max_lines=1, scale=1, elem_id="gp-target")
        suits = gr.Dropdown(play.SUIT_CHOICES, value="mixed", label="Suits", scale=2, elem_id="gp-suits")
        mode = gr.Dropdown(play.MODE_CHOICES, value="paper", label="Dealing", scale=2, elem_id="gp-mode")
    with gr.Row(elem_classes="sv-actions"):
        deal_btn = gr.Button("Deal", variant="primary", elem_id="gp-deal")
        next_btn = gr.Button("Next deal (N)", elem_id="gp-next")
        flip_btn = gr.Button("Flip rule ID ⇄ OOD (F)", elem_id="gp-flip")
    error = gr.HTML("", elem_id="gp-error")
    hand = gr.HTML("", elem_id="gp-hand")
    info = gr.HTML("", elem_id="gp-info")
    link = gr.JSON(visible=False)

    with gr.Accordion("You play", open=True, elem_id="gp-you"):
        with gr.Row():
            card_btns = [gr.Button("", size="sm", elem_id=f"gp-card-{i}", elem_classes="sv-card-btn")
                         for i in range(4)]
            op_btns = [gr.Button(sym, size="sm", elem_classes="sv-op-btn", elem_id=f"gp-op-{name}")
                       for sym, name in (("+", "plus"), ("−", "minus"), ("×", "times"), ("÷", "div"),
                                         ("(", "lpar"), (")", "rpar"))]
            back_btn = gr.Button("⌫", size="sm", elem_id="gp-back")
        with gr.Row():
            formula = gr.Textbox(label="Your formula", placeholder="e.g. (10+2*5)+4", max_lines=1, scale=4,
                                 elem_id="gp-formula")
            check_btn = gr.Button("Check", variant="primary", scale=1, elem_id="gp-check")
        subtotal = gr.HTML(play.subtotal_html(None, ""), elem_id="gp-subtotal")
        verdict = gr.HTML("", elem_id="gp-verdict")
        with gr.Row():
            hint_btn = gr.Button("Hint", size="sm", elem_id="gp-hint")
            all_btn = gr.Button("Show all solutions", size="sm", elem_id="gp-all")
            clear_btn = gr.Button("Clear", size="sm", elem_id="gp-clear")
        hint = gr.HTML("", elem_id="gp-hint-out")

    def show(table: play.Table):
        labels = [f"{c.label} → {v}" for c, v in zip(table.deal.cards, table.numbers)]
        return (table, *_render(table), "", table.link(), "", play.subtotal_html(table, ""), "", "",
                *[gr.Button(value=lab) for lab in labels])

    outputs = [state, hand, info, error, link, formula, subtotal, verdict, hint, *card_btns]

    def on_deal(seed_v, rule_v, target_v, suits_v, mode_v):
        try:
            return show(play.deal_table(seed_v, rule_v, target_v, suits_v, mode_v))
        except play.InputError as exc:
            return (gr.skip(),) * 3 + (error_html(str(exc)),) + (gr.skip(),) * (len(outputs) - 4)

    def on_next(seed_v, rule_v, target_v, suits_v, mode_v):
        try:
            nxt = play.parse_seed(seed_v) + 1 if str(seed_v).strip() else None
        except play.InputError:
            nxt = None
        new_seed = str(nxt if nxt is not None else play.parse_seed(None))
        return (new_seed, *on_deal(new_seed, rule_v, target_v, suits_v, mode_v))

    def on_flip(table):
        if table is None:
            return (gr.skip(),) * (len(outputs) + 1)
        flipped = play.flip_rule(table)
        return (flipped.rule, *show(flipped))

    def on_load(request: gr.Request):
        params = query_params(request)
        table, problem = None, None
        try:
            table = play.table_from_link(params)
        except play.InputError as exc:  # the same message the Target field gives (e.g. target=461)
            problem = str(exc)
        if table is None:
            table = play.deal_table(default_seed, "face10", "24", "mixed", "paper")
        seed_value = str(table.seed) if table.seed is not None else ""
        shown = list(show(table))
        if problem:
            shown[outputs.index(error)] = error_html(problem)
        return (seed_value, table.rule, str(table.deal.target), *shown)

    inputs = [seed, rule, target, suits, mode]
    deal_btn.click(on_deal, inputs, outputs).then(None, link, None, js=URL_UPDATE_JS)
    seed.submit(on_deal, inputs, outputs).then(None, link, None, js=URL_UPDATE_JS)
    next_btn.click(on_next, inputs, [seed, *outputs]).then(None, link, None, js=URL_UPDATE_JS)
    flip_btn.click(on_flip, state, [rule, *outputs]).then(None, link, None, js=URL_UPDATE_JS)

    race = gr.State(None)  # (deal_id, rule, start time) while a race is on

    def on_check(table, f, race_v):
        if table is None:
            return error_html("Deal a hand first."), gr.skip()
        html, solved = play.check_html(table, f)
        if solved and race_v and race_v[:2] == (table.deal_id, table.rule):
            html += (f'<div class="sv-race-result">You solved it in <b>{time.time() - race_v[2]:.1f} s</b> — '
                     'compare with the models\' times below.</div>')
            return html, None
        return html, gr.skip()

    check_btn.click(on_check, [state, formula, race], [verdict, race])
    formula.submit(on_check, [state, formula, race], [verdict, race])
    formula.change(lambda t, f: play.subtotal_html(t, f), [state, formula], subtotal, show_progress="hidden")

    for i, btn in enumerate(card_btns):
        btn.click(lambda t, f, i=i: (f or "") + (str(t.numbers[i]) if t else ""), [state, formula], formula)
    for btn, sym in zip(op_btns, ["+", "−", "×", "÷", "(", ")"]):
        btn.click(lambda f, s=sym: (f or "") + s, formula, formula)
    back_btn.click(lambda f: _backspace(f or ""), formula, formula)
    clear_btn.click(lambda: ("", "", ""), None, [formula, verdict, hint])

    def on_hint(table):
        if table is None:
            return gr.skip(), gr.skip()
        html, new = play.hint_html(table)
        return html, new

    hint_btn.click(on_hint, state, [hint, state])
    all_btn.click(lambda t: play.all_solutions_html(t) if t else "", state, hint)

    return {"state": state, "race": race, "formula": formula, "verdict": verdict, "seed": seed, "rule": rule, "target": target, "suits": suits, "mode": mode,
            "hand": hand, "info": info, "link": link, "on_load": on_load,
            "load_outputs": [seed, rule, target, *outputs], "flip": flip_btn, "next": next_btn}


def _backspace(formula: str) -> str:
    """Remove the last token: a whole number or one symbol."""
    f = formula.rstrip()
    if not f:
        return ""
    if f[-1].isdigit():
        i = len(f)
        while i and f[i - 1].isdigit():
            i -= 1
        return f[:i]
    return f[:-1]
