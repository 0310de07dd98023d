"""The playground UI: one Gradio Blocks app with tabs, mounted at `/` of the FastAPI process.

`build_ui(services)` builds the Blocks; `mount_ui(app, services)` mounts it with our CSS, a
theme that uses only local fonts (nothing is fetched from a CDN), presenter mode and keyboard
shortcuts (acting on the tab on screen; `?` lists them). Deep links (`?tab=gp&deal=HKC5D2C4&rule=face_jqk`,
`?tab=virl&route=3`) restore every control of a tab on load, a bad one says why, and the URL
follows what is on screen. The footer links to our REST API docs (`/docs`, served offline).
Presenter mode is a page state (`presenter=1` in the address, remembered by the browser, kept by
every link the page follows); the server's warm-up plays `landing_instances()`.

Who a page is (`common.visitor`) follows the API's rules exactly: the games it started (their
tokens, kept in the browser: `common.games_state`) are its own, Inspect shows only those and the
evaluation episodes on a public server, and the Evaluate tab asks for the operator token there.

The tabs' modules: `gp_tab` / `gp_play` (24 Points), `virl_tab` / `virl_play` (V-IRL), `models_panel`
(model columns on both), `race`, `difference_panel` ("Show me the difference"), `landing` (the
finding at the top), `findings_tab`, `inspect_tab`, `evaluate_tab`, `models_tab`; `common` the
helpers they share.
"""
from pathlib import Path

import gradio as gr

from game.tasks import TASKS, Instance, task_name

from ..main import create_app
from . import evaluate_tab, findings_tab, gp_play, gp_tab, inspect_tab, models_tab, virl_play, virl_tab
from .common import URL_UPDATE_JS, error_html, games_state, query_params, serving, unserved_text
from .models_panel import add_gp_models, add_virl_models

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
TITLE = "SFT vs RL — Playground"

SHORTCUTS_JS = """
<script>
(() => {
  // A shortcut clicks a button only when it is on screen: buttons of hidden tabs are ignored.
  const shown = (el) => !!el && el.offsetParent !== null && el.getClientRects().length > 0;
  const click = (...ids) => {
    for (const id of ids) { const el = document.getElementById(id); if (shown(el)) { el.click(); return true; } }
    return false;
  };
  const help = () => document.getElementById('sv-help');
  const TABS = ['gp', 'virl', 'findings', 'inspect', 'evaluate', 'models'];
  window.svTabInUrl = () => {
    const t = new URL(window.location.href).searchParams.get('tab');
    return TABS.includes(t) ? t : 'gp';
  };
  // Presenter mode is a page state: `presenter=1` in the address while it is on, and remembered by
  // the browser (localStorage), so a reload, the page's own links and a link opened later keep it.
  const PRESENTER_KEY = 'sv-presenter';
  const presenterOn = () => document.body && document.body.classList.contains('sv-presenter');
  window.svPresenterWanted = () => {
    const q = new URL(window.location.href).searchParams.get('presenter');
    if (q === '1' || q === '0') return q === '1';
    try { return window.localStorage.getItem(PRESENTER_KEY) === '1'; } catch (e) { return false; }
  };
  window.svWriteLink = (params) => {
    const url = new URL(window.location.href);
    const keep = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== '') keep.set(k, String(v));
    }
    if (presenterOn()) keep.set('presenter', '1');
    url.search = keep.toString();
    window.history.replaceState(null, '', url.toString());
  };
  // Every link the page follows inside the app keeps presenter mode.
  document.addEventListener('click', (ev) => {
    const a = ev.target.closest && ev.target.closest('a[href]');
    if (!a || !presenterOn()) return;
    const url = new URL(a.getAttribute('href'), window.location.href);
    if (url.origin !== window.location.origin || url.searchParams.get('presenter')) return;
    url.searchParams.set('presenter', '1');
    a.setAttribute('href', url.toString());
  }, true);
  // Run (R, or its button) brings the model columns on screen: `id` names the element(s) to put at
  // the top; when `first` (the first column's content) appears, again (the columns area is then at
  // least a screen tall, static/ui.css, so the page can scroll that far).
  window.svShowResults = (id, first) => {
    const shown = (el) => !!el && el.getClientRects().length > 0;
    const show = () => {
      // the first of the ids given that shows anything (e.g. the difference note), else the first shown
      const els = String(id).split(' ').map((i) => document.getElementById(i)).filter(shown);
      const el = els.find((e) => e.getBoundingClientRect().height > 0) || els[0];
      if (el) el.scrollIntoView({block: 'start', behavior: 'instant'});
    };
    show();
    if (window.__svShowObserver) window.__svShowObserver.disconnect();
    if (!first) return;
    const obs = new MutationObserver(() => {
      if (document.querySelector(first)) { obs.disconnect(); show(); }
    });
    window.__svShowObserver = obs;
    obs.observe(document.body, {childList: true, subtree: true});
  };
  // Clicking a tab puts that tab's link (its controls, remembered by URL_UPDATE_JS) in the URL.
  document.addEventListener('click', (ev) => {
    const btn = ev.target.closest && ev.target.closest('[role=tab][id^="tab-"]');
    if (!btn) return;
    const tab = btn.id.replace(/^tab-/, '').replace(/-button$/, '');
    if (TABS.includes(tab)) window.svWriteLink((window.__svLinks || {})[tab] || {tab});
  }, true);
  window.svToggleHelp = (force) => {
    const h = help(); if (!h) return;
    const open = force === undefined ? h.hidden : force;
    h.hidden = !open;
    if (open) h.querySelector('button')?.focus();
  };
  const applyPresenter = (on) => {
    const b = document.body;
    if (on && !b.classList.contains('sv-presenter')) window.__svWasDark = b.classList.contains('dark');
    b.classList.toggle('sv-presenter', !!on);
    b.classList.toggle('dark', !!on || !!window.__svWasDark);
  };
  window.svSetPresenter = (on) => {
    applyPresenter(on);
    try { window.localStorage.setItem(PRESENTER_KEY, on ? '1' : '0'); } catch (e) { /* private mode */ }
    const url = new URL(window.location.href);
    if (on) url.searchParams.set('presenter', '1'); else url.searchParams.delete('presenter');
    window.history.replaceState(null, '', url.toString());
  };
  // Before the app draws: no white flash on a projector.
  const early = () => { if (window.svPresenterWanted()) applyPresenter(true); };
  if (document.body) early(); else document.addEventListener('DOMContentLoaded', early);
  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === 'Escape') { window.svToggleHelp(false); return; }
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
    const key = ev.key.toLowerCase();
    let done = false;
    if (ev.key === '?') { window.svToggleHelp(); done = true; }
    else if (key === 'n') done = click('gp-next');
    else if (key === 'f') done = click('gp-flip');
    else if (key === 'r') done = click('gp-run', 'virl-run');
    else if (key === 'd') done = click('gp-difference', 'virl-difference');
    else if (key === 'p') { const box = document.querySelector('#sv-presenter-toggle input'); if (box) { box.click(); done = true; } }
    if (done) ev.preventDefault();
  });
})();
</script>
"""

HELP_HTML = """
<div id="sv-help" class="sv-help" role="dialog" aria-label="Keyboard shortcuts" hidden>
  <div class="sv-help-box"><h2>Keyboard shortcuts</h2>
  <table><tr><td><kbd>N</kbd></td><td>next deal (24 Points)</td></tr>
  <tr><td><kbd>F</kbd></td><td>flip the rule ID ⇄ OOD (24 Points)</td></tr>
  <tr><td><kbd>R</kbd></td><td>run the models on the tab on screen</td></tr>
  <tr><td><kbd>D</kbd></td><td>show me the difference: a hand or route where SFT and RL disagree, and run them</td></tr>
  <tr><td><kbd>P</kbd></td><td>presenter mode (large type, high contrast)</td></tr>
  <tr><td><kbd>?</kbd></td><td>this help</td></tr><tr><td><kbd>Esc</kbd></td><td>close it</td></tr></table>
  <p>Shortcuts act on the tab on screen only, and not while you type in a field.</p>
  <button type="button" onclick="window.svToggleHelp(false)">Close</button></div>
</div>
"""

PRESENTER_JS = "(on) => { window.svSetPresenter(on); return []; }"
# On load, the checkbox takes the page's presenter state (address, else the browser's memory).
PRESENTER_LOAD_JS = "() => window.svPresenterWanted ? window.svPresenterWanted() : false"

FOOTER = ('<footer class="sv-footer"><a href="docs" target="_blank">REST API (/docs)</a> · '
          '<a href="redoc" target="_blank">ReDoc</a> · '
          '<a href="#" onclick="window.svToggleHelp(true); return false;">keyboard shortcuts (?)</a> · '
          'Map data © OpenStreetMap contributors (ODbL) · card art and street views drawn by this project '
          '· runs offline</footer>')


# Gradio's status tracker announces "common.complete" to screen readers, a key its English strings
# lack (it would be read out as is); these fill it in.
I18N = gr.I18n(en={"common.complete": "Done"}, **{"en-US": {"common.complete": "Done"}})


def css() -> str:
    return (STATIC_DIR / "ui.css").read_text(encoding="utf-8")


def theme():
    # System font stacks only: a GoogleFont here would make the browser fetch from the internet.
    return gr.themes.Soft(primary_hue="emerald", neutral_hue="slate",
                          font=["ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif"],
                          font_mono=["ui-monospace", "DejaVu Sans Mono", "monospace"])


def build_ui(services=None):
    """The Blocks app. `services` gives model runs, the episode store and evaluations (may be None
    for a people-only UI, e.g. in tests of the engines' tabs). Each tab registers its own load
    handler (restoring its deep link) and writes its link into the address bar when selected."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        games = games_state(services) if services is not None else None   # the page's game tokens
        with gr.Row(elem_id="sv-header", equal_height=True):
            gr.HTML(f'<div class="sv-title"><h1>{TITLE}</h1><p>Chu et al., 2025, "SFT Memorizes, RL '
                    'Generalizes": you and the models on the paper\'s two tasks. <kbd>?</kbd> shortcuts</p>'
                    f'</div>{HELP_HTML}')
            presenter = gr.Checkbox(label="Presenter mode (P)", value=False, elem_id="sv-presenter-toggle",
                                    scale=0, min_width=200)
        presenter.change(None, presenter, None, js=PRESENTER_JS)
        demo.load(None, None, presenter, js=PRESENTER_LOAD_JS)
        link_note = gr.HTML("", elem_id="sv-link-note", elem_classes="sv-collapse")
        tabbed = []  # (tab, part) for the tabs with a load handler and a link
        with gr.Tabs(selected="gp", elem_id="sv-tabs") as tabs:
            with gr.Tab("24 Points", id="gp", elem_id="tab-gp") as tab:
                gp = gp_tab.build()
                if services is not None:
                    add_gp_models(services, gp, games)
                tabbed.append((tab, gp))
            with gr.Tab("V-IRL", id="virl", elem_id="tab-virl") as tab:
                note = None
                if services is not None and not serving(services.pool, task_name("virl", vision=True)):
                    note = "The models play text only. " + unserved_text(task_name("virl", vision=True))
                virl = virl_tab.build(vision_note=note)
                if services is not None:
                    add_virl_models(services, virl, games)
                tabbed.append((tab, virl))
            if services is not None:
                with gr.Tab("Findings", id="findings", elem_id="tab-findings") as tab:
                    tabbed.append((tab, findings_tab.build(services, tab)))
                with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect") as tab:
                    tabbed.append((tab, inspect_tab.build(services, tab, games)))
                with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                    evaluate_tab.build(services)
                with gr.Tab("Models", id="models", elem_id="tab-models") as tab:
                    models_tab.build(services, tab)
        gr.HTML(FOOTER)

        valid = ["gp", "virl"] + (["findings", "inspect", "evaluate", "models"] if services is not None else [])

        def select_tab(request: gr.Request):
            """The tab the link names; an unknown one says so (and shows 24 Points)."""
            tab = query_params(request).get("tab", "gp")
            if tab in valid:
                return gr.Tabs(selected=tab), ""
            return gr.Tabs(selected="gp"), error_html(
                f"This link names the tab {tab[:30]!r}, which does not exist (the tabs are {', '.join(valid)}): "
                "showing 24 Points.")

        demo.load(select_tab, None, [tabs, link_note])
        if services is not None:
            services.pool.warm_instances.update(landing_instances())
        for _tab, part in tabbed:
            demo.load(part["on_load"], part.get("load_inputs"), part["load_outputs"]
                      ).then(None, part["link"], None, js=URL_UPDATE_JS)
    return demo


def landing_instances() -> dict:
    """What each task's tab plays when opened without a link (the server's warm-up plays these):
    the tasks of the families with a tab here (24 Points, V-IRL); another registered task has no
    landing instance, and the warm-up plays its first evaluation instance instead."""
    table, walk = gp_play.default_table(), virl_play.Walk()
    shown: dict[str, dict] = {"gp": {"deal_id": table.deal_id, "rule": table.rule},
                              "virl": {"source": walk.source, "route": walk.route, "seed": walk.seed, "absolute_action": walk.absolute}}
    return {t: Instance(t, shown[spec.family]) for t, spec in TASKS.items() if spec.family in shown}


def mount_ui(app, services=None, *, path: str = "/", root_path: str | None = None):
    """Mount the UI on a FastAPI app (API routes stay where they are)."""
    demo = build_ui(services)
    return gr.mount_gradio_app(app, demo, path=path, root_path=root_path, theme=theme(), css=css(),
                               head=SHORTCUTS_JS, footer_links=[], show_error=False,
                               favicon_path=str(STATIC_DIR / "favicon.png"), i18n=I18N)


def create_app_with_ui(settings=None, *, root_path: str | None = None):
    """The whole product in one FastAPI app: REST API under /api, docs at /docs, the UI at /."""
    app = create_app(settings, placeholder=False)
    return mount_ui(app, app.state.ctx, root_path=root_path or None)
