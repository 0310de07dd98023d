"""The 24 Points tab (Gradio): deal, play yourself, hints, flip the rule, deep links.

This module owns the person-facing part and the tab's layout. It leaves empty slots that
`app.ui.models_panel` fills when models are configured: `models_slot` (pick models, Run, Stop,
right under the deal buttons so it is on screen at 1366×768; Run then scrolls the hand to the top
with the columns under it) and `columns_slot` (the models' columns, beside "You play"), plus
`race_slot` inside "You play" for `app.ui.race`, `finding_slot` at the top (`app.ui.landing`) and
`difference_slot` under the hand (`app.ui.difference_panel`). Choosing the rule, target, suits or
dealing mode takes effect at once.
Handlers return dicts keyed by component, so each one names exactly what it changes.
"""
from __future__ import annotations

import gradio as gr

from . import gp_play as play
from .common import URL_UPDATE_JS, error_html, note_html, query_params


def build() -> dict:
    """Build the tab's components inside the current Blocks context; returns them by name."""
    state = gr.State(None)
    finding_slot = gr.Column(elem_id="gp-finding-slot")  # the landing page's finding (app.ui.landing)
    with gr.Row(elem_classes="sv-controls", equal_height=True):
        seed = gr.Textbox(label="Seed", value=str(play.DEFAULT_SEED), max_lines=1, min_width=90, scale=2,
                          max_length=play.MAX_FIELD_CHARS * 4, elem_id="gp-seed")
        rule = gr.Radio(play.RULE_CHOICES, value="face10", label="Face cards (rule)", min_width=400, scale=5,
                        elem_id="gp-rule")
        target = gr.Textbox(label="Target", value="24", max_lines=1, min_width=80, scale=2,
                            max_length=play.MAX_FIELD_CHARS * 4, elem_id="gp-target")
        suits = gr.Dropdown(play.SUIT_CHOICES, value="mixed", label="Suits", min_width=150, scale=3,
                            elem_id="gp-suits")
        mode = gr.Dropdown(play.MODE_CHOICES, value="paper", label="Dealing", min_width=140, scale=3,
                           elem_id="gp-mode")
    with gr.Row(elem_classes="sv-actions") as deal_row:   # "Show me the difference" joins it
        deal_btn = gr.Button("Deal", variant="primary", elem_id="gp-deal")
        next_btn = gr.Button("Next deal (N)", elem_id="gp-next")
        flip_btn = gr.Button("Flip rule ID ⇄ OOD (F)", elem_id="gp-flip")
    models_slot = gr.Column(elem_id="gp-models-slot")   # Run is on screen at 1366×768 without scrolling
    message = gr.HTML("", elem_id="gp-error", elem_classes="sv-collapse")
    info = gr.HTML("", elem_id="gp-info")
    hand = gr.HTML("", elem_id="gp-hand")
    difference_slot = gr.Column(elem_id="gp-difference-slot")  # under the hand: who won it, how often
    link = gr.JSON(visible=False)

    with gr.Row(equal_height=False, elem_classes="sv-play-row"):
        with gr.Column(scale=2, min_width=340):
            with gr.Accordion("You play", open=True, elem_id="gp-you"):
                with gr.Row():
                    card_btns = [gr.Button("", size="sm", min_width=60, elem_id=f"gp-card-{i}", elem_classes="sv-card-btn")
                                 for i in range(4)]
                with gr.Row():
                    op_btns = [gr.Button(sym, size="sm", min_width=36, elem_classes="sv-op-btn", elem_id=f"gp-op-{name}")
                               for sym, name in (("+", "plus"), ("−", "minus"), ("×", "times"), ("÷", "div"),
                                                 ("(", "lpar"), (")", "rpar"))]
                    back_btn = gr.Button("⌫", size="sm", min_width=36, elem_id="gp-back")
                with gr.Row():
                    formula = gr.Textbox(label="Your formula", placeholder="e.g. (10+2*5)+4", max_lines=1,
                                         scale=4, max_length=play.MAX_FORMULA_CHARS * 2, elem_id="gp-formula")
                    check_btn = gr.Button("Check", variant="primary", scale=1, min_width=80, elem_id="gp-check")
                subtotal = gr.HTML(play.subtotal_html(None, ""), elem_id="gp-subtotal")
                verdict = gr.HTML("", elem_id="gp-verdict", elem_classes="sv-collapse")
                race_slot = gr.Column(elem_id="gp-race-slot")
                with gr.Row():
                    hint_btn = gr.Button("Hint", size="sm", min_width=60, elem_id="gp-hint")
                    all_btn = gr.Button("Show all solutions", size="sm", min_width=60, elem_id="gp-all")
                    clear_btn = gr.Button("Clear", size="sm", min_width=60, elem_id="gp-clear")
                hint = gr.HTML("", elem_id="gp-hint-out", elem_classes="sv-collapse")
        columns_slot = gr.Column(scale=3, min_width=400, elem_id="gp-columns-slot")

    def show(table: play.Table, note: str = "") -> dict:
        """Everything that follows the table on screen, controls included (so they match the link)."""
        labels = [f"{c.label} → {v}" for c, v in zip(table.deal.cards, table.numbers)]
        out = {state: table, hand: play.hand_html(table), info: play.info_html(table), message: note_html(note),
               link: table.link(), formula: "", subtotal: play.subtotal_html(table, ""), verdict: "", hint: "",
               seed: str(table.seed) if table.seed is not None else "", rule: table.rule,
               target: str(table.deal.target), suits: table.suits, mode: table.mode}
        out.update({btn: gr.Button(value=lab) for btn, lab in zip(card_btns, labels)})
        return out

    outputs = [state, hand, info, message, link, formula, subtotal, verdict, hint, seed, rule, target, suits,
               mode, *card_btns]
    inputs = [seed, rule, target, suits, mode]

    def on_deal(seed_v, rule_v, target_v, suits_v, mode_v, request: gr.Request):
        try:
            return show(play.deal_table(seed_v, rule_v, target_v, suits_v, mode_v, client=_client(request)))
        except play.InputError as exc:
            return {message: error_html(str(exc))}

    def on_next(seed_v, rule_v, target_v, suits_v, mode_v, request: gr.Request):
        try:
            nxt = str(play.parse_seed(seed_v) + 1) if str(seed_v).strip() else ""
        except play.InputError:
            nxt = ""  # a bad seed in the box: Next deal starts a fresh random stream
        return on_deal(nxt, rule_v, target_v, suits_v, mode_v, request)

    def on_flip(table):
        if table is None:
            return {message: error_html("Deal a hand first.")}
        flipped, note = play.flip_rule(table)
        return show(flipped, note)

    def on_rule(table, rule_v):
        """Choosing the rule takes effect at once: the hand on screen under that rule (as Flip)."""
        if table is None:
            return gr.skip()
        if table.rule == rule_v:
            return gr.skip()
        return on_flip(table)

    def on_setting(table, seed_v, rule_v, target_v, suits_v, mode_v, request: gr.Request):
        """A new target, suits or dealing mode deals again at once (the link follows)."""
        if table is not None and (str(target_v).strip(), suits_v, mode_v) == (str(table.deal.target), table.suits,
                                                                                table.mode):
            return gr.skip()
        return on_deal(seed_v, rule_v, target_v, suits_v, mode_v, request)

    for trigger, fn in (([deal_btn.click, seed.submit, target.submit], on_deal), ([next_btn.click], on_next)):
        gr.on(trigger, fn, inputs, outputs).then(None, link, None, js=URL_UPDATE_JS)
    flip_btn.click(on_flip, state, outputs).then(None, link, None, js=URL_UPDATE_JS)
    rule.input(on_rule, [state, rule], outputs).then(None, link, None, js=URL_UPDATE_JS)
    gr.on([target.blur, suits.input, mode.input], on_setting, [state, *inputs], outputs
          ).then(None, link, None, js=URL_UPDATE_JS)

    def on_check(table, f):
        if table is None:
            return error_html("Deal a hand first.")
        return play.check_html(table, f)[0]

    check_triggers = [check_btn.click, formula.submit]
    gr.on(check_triggers, on_check, [state, formula], verdict)

    def on_formula(table, f):
        """The live subtotal, and each card button usable only while its card is not in the formula."""
        used = play.used_cards(table, f)
        return {subtotal: play.subtotal_html(table, f),
                **{btn: gr.Button(interactive=not u) for btn, u in zip(card_btns, used)}}

    formula.change(on_formula, [state, formula], [subtotal, *card_btns], show_progress="hidden")

    for i, btn in enumerate(card_btns):
        btn.click(lambda t, f, i=i: play.add_card(t, f, i), [state, formula], formula)
    for btn, sym in zip(op_btns, ["+", "−", "×", "÷", "(", ")"]):
        btn.click(lambda f, s=sym: (f or "") + s, formula, formula)
    back_btn.click(lambda f: _backspace(f or ""), formula, formula)
    clear_btn.click(lambda: ("", "", ""), None, [formula, verdict, hint])

    def on_hint(table):
        if table is None:
            return {hint: error_html("Deal a hand first.")}
        html, new = play.hint_html(table)
        return {hint: html, state: new}

    hint_btn.click(on_hint, state, [hint, state])
    all_btn.click(lambda t: play.all_solutions_html(t) if t else error_html("Deal a hand first."), state, hint)

    def on_load(request: gr.Request):
        """Restore the hand and every control from the link; a bad link says why and deals the default."""
        try:
            table = play.table_from_link(query_params(request), client=_client(request))
        except play.InputError as exc:
            out = show(play.default_table())
            out[message] = error_html(f"This link could not be restored: {exc}. Showing the default hand.")
            return out
        return show(table or play.default_table())

    return {"state": state, "formula": formula, "verdict": verdict, "hand": hand, "info": info, "link": link,
            "check_triggers": check_triggers, "models_slot": models_slot, "columns_slot": columns_slot,
            "race_slot": race_slot, "finding_slot": finding_slot, "difference_slot": difference_slot,
            "deal_row": deal_row, "on_load": on_load, "load_outputs": outputs,
            "show": show, "outputs": outputs}


def _client(request) -> str:
    """The visitor's address: its share of the CPU pool when a deal can be slow."""
    return getattr(getattr(request, "client", None), "host", None) or ""


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
