"""Paper-exact prompt texts: GP-L / GP-VL / V-IRL-L / V-IRL-VL templates, their `_EG` API variants,
the feedback turn, and the SFT response renderers (`ResponseEqn`, `ResponseVIRL`).

This module owns every byte a model reads for a task (spec generalpoints.md §2.1–2.2, §2.6;
virl.md §2.1–2.6). The texts keep the reference's quirks on purpose: the leading newline, the
`'10'., and` artifact, the single-quoted formula placeholder, the "stree tviews" typo, the line
break after "You" and the trailing space after "executed.". Do not "fix" them: the released
checkpoints were trained on these exact strings.

Inputs are plain values (Plain-Card labels, a rule, a target; instruction / action-space /
observation-history strings), so the prompts do not depend on engine internals.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from game.gp.cards import Rule

# ---------------------------------------------------------------------------------------------
# GeneralPoints

GP_VARIANTS = ("L", "L_EG", "VL", "VL_EG")
TEMPLATE_NAMES = {
    "L": "Q_GeneralPoint_EQN_L",
    "L_EG": "Q_GeneralPoint_EQN_L_EG",
    "VL": "Q_GeneralPoint_EQN_VL",
    "VL_EG": "Q_GeneralPoint_EQN_VL_EG",
}

FACE_CARD_MSG = {
    Rule.FACE10: "'J', 'Q', and 'K' count as '10'.",
    Rule.FACE_JQK: "'J', 'Q', and 'K' count as '11', '12', and '13' respectively.",
}

_GP_INTRO_L = "You are an expert {target_number} points card game player. You will receive a set of 4 cards."
_GP_INTRO_VL = ("You are an expert {target_number} points card game player. "
                "You are observing these four cards in the image.")

_GP_TASK = (
    "\n[Task Description]\n"
    "{intro}\n"
    "Note that {face_card_msg}, and each card must be used once.\n"
    "Your goal is to output a formula that evaluates to {target_number} using numbers from the cards "
    "and operators such as '+', '-', '*', '/', '(', ')', and '='.\n"
    "\n"
)
_GP_INPUT = "[Input]\nCards: {cards}\n\n"
_GP_OUTPUT = (
    "[Output]\n"
    "{json_line}"
    "{{\n"
    "  \"cards\": [x, y, z, w], where {face_card_msg},\n"
    "  \"number\": [a, b, c, d], where a, b, c, and d are the numbers on the cards,\n"
    "  \"formula\": 'an equation that equals {target_number}',\n"
    "}}\n"
    "\n"
)
_GP_JSON_LINE = "Your response should be a valid json file in the following format:\n"
_GP_EXAMPLE = (
    "[Output Example]\n"
    "{\n"
    "  \"cards\": [4, 3, 2, K],\n"
    "  \"number\": [4, 3, 2, 10],\n"
    "  \"formula\": \"4*3+2+10=24\",\n"
    "}\n"
    "\n"
    "Please only output the json.\n"
)

FEEDBACK_PREFIX = "You failed this trial because "


def cards_repr(cards: Sequence[str]) -> str:
    """Python `repr` of the Plain-Card label list, e.g. `['K', '5', '10', 'A']`."""
    return repr([str(c) for c in cards])


def gp_prompt(cards: Sequence[str] | None, rule: "Rule | str" = Rule.FACE10, target: int = 24, *,
              vision: bool = False, eg: bool = False, rule_text: str | None = None) -> str:
    """The GeneralPoints prompt (`Q_GeneralPoint_EQN_{L,VL}[_EG]`), byte-exact.

    `cards` are Plain-Card labels in dealing order (`A`, `2`..`10`, `J`, `Q`, `K`); they are only
    shown in GP-L (GP-VL has no `[Input]` block and may pass `None`). `rule` is a `Rule` or any
    spelling `Rule.parse` accepts. `rule_text` states the face-card rule in other words, in both
    places where the paper's sentence stands (the `reworded` split, `game.gp.phrasings`); it must
    state what `rule` grades, which the caller owns.
    """
    rule = Rule.parse(rule)
    msg = rule_text or FACE_CARD_MSG[rule]
    intro = (_GP_INTRO_VL if vision else _GP_INTRO_L).format(target_number=target)
    text = _GP_TASK.format(intro=intro, face_card_msg=msg, target_number=target)
    if not vision:
        if cards is None:
            raise ValueError("GP-L prompts need the cards")
        text += _GP_INPUT.format(cards=cards_repr(cards))
    text += _GP_OUTPUT.format(json_line=_GP_JSON_LINE if vision else "", face_card_msg=msg,
                              target_number=target)
    if eg:
        text += _GP_EXAMPLE
    return text


def gp_prompt_variant(variant: str, cards: Sequence[str] | None, rule: "Rule | str" = Rule.FACE10,
                      target: int = 24) -> str:
    """`gp_prompt` by variant name: `L`, `L_EG`, `VL` or `VL_EG`."""
    if variant not in GP_VARIANTS:
        raise ValueError(f"unknown GP prompt variant {variant!r}: use one of {', '.join(GP_VARIANTS)}")
    return gp_prompt(cards, rule, target, vision=variant.startswith("VL"), eg=variant.endswith("_EG"))


def feedback_text(verify_info: str) -> str:
    """The user turn appended after a failed step: `You failed this trial because <verify_info>`."""
    return FEEDBACK_PREFIX + str(verify_info)


def response_eqn(cards: Sequence[str], numbers: Iterable[int], formula: str, target: int = 24) -> str:
    """The SFT target reply (`ResponseEqn`): leading newline, single-quoted cards, trailing comma.

    `formula` is written as given, with `=<target>` appended unless it already contains `=`.
    """
    if "=" not in formula:
        formula = f"{formula}={target}"
    nums = ", ".join(str(int(n)) for n in numbers)
    return (
        "\n{\n"
        f"  \"cards\": {cards_repr(cards)},\n"
        f"  \"number\": [{nums}],\n"
        f"  \"formula\": \"{formula}\",\n"
        "}"
    )


# ---------------------------------------------------------------------------------------------
# V-IRL

VIRL_TEMPLATE_NAMES = {"L": "Q_VIRL_L", "VL": "Q_VIRL_VL", "L_EG": "Q_VIRL_L_EG", "VL_EG": "Q_VIRL_VL_EG"}

ABSOLUTE_DIRECTIONS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
RELATIVE_DIRECTIONS = ("left", "right", "slightly left", "slightly right")

_VIRL_TASK = (
    "\n[Task Description]\n"
    "You are an expert in navigation. You will receive a sequence of instructions to follow{vl_part}. You\n"
    "are also provided with your observation and action history in text. Your goal is to first analyze "
    "the instruction and identify the next sentence to be executed. \n"
    "Then, you need to provide the action to be taken based on the current observation and instruction.\n"
    "\n"
    "[Instruction]\n"
    "{instruction}\n"
    "\n"
)
_VIRL_VL_PART = " while observing your surrounding stree tviews"
_VIRL_OBS_FORMAT = (
    "[Observation format]\n"
    "You observe a 2x2 grid of streetview images with the following headings:\n"
    "[front, right\n"
    " back, left]\n"
    "You need to identify if any of the landmarks in the instruction are visible in the street view grid.\n"
    "\n"
)
_VIRL_REST = (
    "[Action space]\n"
    "{action_space}\n"
    "\n"
    "[Observations and actions sequence]\n"
    "{obs_act_seq}\n"
    "\n"
    "[Output]\n"
    "{{\n"
    "  \"current observation\": latest observation from the {obs_source},\n"
    "  \"current instruction\": analyze the full instruction and identify the sentence to be executed,\n"
    "  \"action\": the action to be taken chosen from the action space,\n"
    "}}\n"
)
_VIRL_EG_TAIL = "\nPlease only output the json.\n"


def virl_action_space(absolute: bool = True) -> str:
    """The exact `{action_space}` text: absolute (8 compass words) or relative (4 turn words)."""
    if absolute:
        xs = f"x could be any following 8 directions {list(ABSOLUTE_DIRECTIONS)!r}"
    else:
        xs = f"x could be any following {list(RELATIVE_DIRECTIONS)!r}"
    return (
        "\"forward()\": indicates moving forward one step\n"
        "\"turn_direction(x)\": indicates adjust the ego agent direction towards x direction. " + xs + "\n"
        "\"stop()\": indicates the navigation is finished."
    )


def virl_prompt(instruction: str, obs_act_seq: str, action_space: "str | bool" = True, *,
                vision: bool = False, eg: bool = False) -> str:
    """The V-IRL prompt (`Q_VIRL_L` / `Q_VIRL_VL` [+ `_EG`]), byte-exact.

    `instruction` is the numbered instruction text (`info['global_instruction']`, ending in a
    newline); `obs_act_seq` is the observation/action history for this mode (the VL history has
    `O_k: You observe an image of 4 views; …` as its current line); `action_space` is the exact
    text, or a bool choosing the absolute (True) / relative (False) action space.
    """
    if isinstance(action_space, bool):
        action_space = virl_action_space(action_space)
    text = _VIRL_TASK.format(vl_part=_VIRL_VL_PART if vision else "", instruction=instruction)
    if vision:
        text += _VIRL_OBS_FORMAT
    text += _VIRL_REST.format(action_space=action_space, obs_act_seq=obs_act_seq,
                              obs_source="street view grid" if vision else "observation sequence")
    if eg:
        text += _VIRL_EG_TAIL
    return text


def response_virl(current_observation: str, current_instruction: str, action: str) -> str:
    """The V-IRL SFT target reply (`ResponseVIRL`): leading newline, trailing comma, final newline."""
    return (
        "\n{\n"
        f"  \"current observation\": \"{current_observation}\",\n"
        f"  \"current instruction\": \"{current_instruction}\",\n"
        f"  \"action\": \"{action}\",\n"
        "}\n"
    )

__all__ = [
    'GP_VARIANTS',
    'TEMPLATE_NAMES',
    'FACE_CARD_MSG',
    'FEEDBACK_PREFIX',
    'cards_repr',
    'gp_prompt',
    'gp_prompt_variant',
    'feedback_text',
    'response_eqn',
    'VIRL_TEMPLATE_NAMES',
    'ABSOLUTE_DIRECTIONS',
    'RELATIVE_DIRECTIONS',
    'virl_action_space',
    'virl_prompt',
    'response_virl',
]
