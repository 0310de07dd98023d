"""GRPO's update on problems whose answer is known: exact log-probs, a one-token bandit, the
direction of one update, per-call credit by hand, and a toy where only the verifier's feedback
reveals the answer, so revising after feedback must be learned."""
from __future__ import annotations

import copy
import random

import pytest

pytest.importorskip("torch")

from models.train.evaluate import EpisodeBatch, Turn
from models.train.grpo import (GRPOConfig, call_advantages, call_returns, group_advantages,
                               policy_update, reply_logprobs, rewards_to_go, turn_advantages)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from models.tiny import build_tiny_llama
    from models.train.common import load_checkpoint

    path = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "m", hidden=32, layers=1, heads=2, kv_heads=1,
                            vocab_size=400, init_std=0.02, seed=0)
    return load_checkpoint(path)


def test_reply_logprobs_match_a_manual_forward(tiny):
    import torch

    model, tok = tiny
    turns = [Turn(0, [5, 6, 7, 8], [9, 10], 0.0), Turn(1, [5, 6], [11, 12, 13], 0.0)]
    for temperature in (1.0, 0.5):   # the distribution the rollouts sampled from: logits / T
        logp, mask = reply_logprobs(model, turns, tok.pad_token_id, temperature)
        for row, t in enumerate(turns):
            seq = torch.tensor([t.context + t.reply])
            with torch.no_grad():
                lsm = torch.log_softmax(model(input_ids=seq).logits[0].float() / temperature, -1)
            manual = sum(float(lsm[len(t.context) - 1 + k, tok_id]) for k, tok_id in enumerate(t.reply))
            assert float((logp[row] * mask[row]).sum()) == pytest.approx(manual, abs=1e-4)
            assert int(mask[row].sum()) == len(t.reply)
    assert not torch.allclose(reply_logprobs(model, turns, tok.pad_token_id, 0.5)[0] * mask,
                              reply_logprobs(model, turns, tok.pad_token_id)[0] * mask)


def test_rewards_to_go_and_per_call_advantages_by_hand():
    assert rewards_to_go([-1, -1, 5], 1.0) == [3, 4, 5]
    assert rewards_to_go([-1, 5], 0.5) == pytest.approx([1.5, 5])
    # one group of four episodes of the same hand: solved at try 1, solved at try 2, never, never
    returns = [[5.0], [4.0, 5.0], [-3.0, -2.0], [-4.0, -3.0]]
    success = [True, True, False, False]
    adv = call_advantages(returns, success, 4, eps=0.0)
    first = [a[0] for a in adv]
    assert first[0] > first[1] > 0 > first[2] > first[3]          # try 1 against every episode of the hand
    assert adv[1][1] > 0 > adv[2][1] and adv[1][1] > adv[3][1]     # try 2 only against those that reached it
    # a group where every episode failed carries no signal, however its penalties differ
    assert call_advantages([[-3.0, -1.0], [-1.0, -2.0]], [False, False], 2) == [[0.0, 0.0], [0.0, 0.0]]
    # ... and one where every episode succeeded neither (`uniform="success"`), unless asked
    assert call_advantages([[5.0], [4.0, 5.0]], [True, True], 2) == [[0.0], [0.0, 0.0]]
    assert call_advantages([[5.0], [4.0, 5.0]], [True, True], 2, uniform="none")[0][0] > 0
    # a call reached by a single episode has no baseline
    assert call_advantages([[5.0], [-1.0, 5.0]], [True, True], 2, uniform="none")[1][1] == 0.0
    # plain GRPO on single-call episodes
    g = group_advantages([5.0, -6.0, 5.0, 5.0], 2, 1e-4)
    assert g[0] > 0 > g[1] and g[2] == g[3] == 0.0


def test_call_returns_charge_a_reply_that_never_ends():
    class R:
        def __init__(self, reward, graded=True):
            self.reward, self.graded = reward, graded

    class S:
        def __init__(self, rewards):
            self.results = [R(r) for r in rewards]

    batch = EpisodeBatch([S([-1.0, 5.0])], [Turn(0, [1], [2, 3], -1.0), Turn(0, [1], [4], 5.0, finished=False)])
    cfg = GRPOConfig(unfinished_reward=-3.0)
    assert call_returns(batch, cfg) == [[-4.0, -3.0]]
    assert call_returns(batch, GRPOConfig(unfinished_reward=None)) == [[4.0, 5.0]]
    assert call_returns(batch, GRPOConfig(credit="episode", unfinished_reward=None)) == [[4.0, 4.0]]
    assert turn_advantages(batch, [[0.5, -0.5]]) == [0.5, -0.5]


def test_grpo_update_solves_a_one_token_bandit(tiny):
    """Reward 1 when the single sampled token is in a fixed set of 5 (of ~400), else 0. Starting
    near chance (~1 %), GRPO (group advantages, clipped ratio) must drive success above 90 %."""
    import torch

    from models.train.data import ChatCodec
    from models.train.evaluate import generate_batch

    model, tok = tiny
    model = copy.deepcopy(model)
    codec = ChatCodec(tok)
    torch.manual_seed(0)
    random.seed(0)
    context = codec.prompt_ids("pick")
    good = set(range(100, 105))
    cfg = GRPOConfig(lr=3e-2, epochs=2, minibatch_turns=64, group_size=16, kl_coef=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rates = []
    for _ in range(30):
        model.eval()
        gens = generate_batch(model, codec, [context] * 64, max_new_tokens=1, temperature=1.0, top_p=1.0)
        rewards = [1.0 if g.ids and g.ids[0] in good else 0.0 for g in gens]
        rates.append(sum(rewards) / len(rewards))
        turns = [Turn(i, context, g.ids[:1], r) for i, (g, r) in enumerate(zip(gens, rewards))]
        adv = group_advantages(rewards, cfg.group_size, cfg.adv_eps)
        with torch.no_grad():
            old = [reply_logprobs(model, turns, codec.pad_id)[0]]
        model.train()
        policy_update(model, opt, turns, adv, old, cfg, codec.pad_id)
    assert rates[0] < 0.2
    assert sum(rates[-3:]) / 3 > 0.9, rates


def test_grpo_update_moves_probability_towards_the_better_reply(tiny):
    """One update with advantages +1 / −1 raises the log-prob of the first reply, lowers the second."""
    import torch

    from models.train.data import ChatCodec

    model, tok = tiny
    model = copy.deepcopy(model)
    codec = ChatCodec(tok)
    ctx = codec.prompt_ids("choose")
    turns = [Turn(0, ctx, [50, 51, 52], 1.0), Turn(1, ctx, [60, 61, 62], 0.0)]
    cfg = GRPOConfig(lr=1e-3, epochs=1)
    with torch.no_grad():
        before, mask = reply_logprobs(model, turns, codec.pad_id)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    policy_update(model, opt, turns, [1.0, -1.0], [before], cfg, codec.pad_id)
    with torch.no_grad():
        after, _ = reply_logprobs(model, turns, codec.pad_id)
    gain = ((after - before) * mask).sum(1)
    assert gain[0] > 0 > gain[1]


def test_kl_penalty_pulls_the_policy_back_to_the_reference(tiny):
    """With no reward signal (zero advantages) the KL term alone moves a drifted policy's
    log-probs back towards the reference's."""
    import torch

    from models.train.data import ChatCodec

    model, tok = tiny
    ref = copy.deepcopy(model)
    drifted = copy.deepcopy(model)
    with torch.no_grad():
        for p in drifted.parameters():
            p.add_(0.05 * torch.randn_like(p))
    codec = ChatCodec(tok)
    ctx = codec.prompt_ids("stay")
    turns = [Turn(i, ctx, [40 + i, 41, 42], 0.0) for i in range(8)]
    cfg = GRPOConfig(lr=3e-3, epochs=1, kl_coef=1.0, minibatch_turns=8)

    def gap() -> float:
        with torch.no_grad():
            a, m = reply_logprobs(drifted, turns, codec.pad_id)
            b, _ = reply_logprobs(ref, turns, codec.pad_id)
        return float(((a - b).abs() * m).sum())

    before = gap()
    opt = torch.optim.Adam(drifted.parameters(), lr=cfg.lr)
    for _ in range(20):
        with torch.no_grad():
            old = [reply_logprobs(drifted, turns, codec.pad_id)[0]]
            reference = [reply_logprobs(ref, turns, codec.pad_id)[0]]
        policy_update(drifted, opt, turns, [0.0] * len(turns), old, cfg, codec.pad_id, reference)
    assert gap() < 0.5 * before


def test_grpo_learns_to_revise_from_the_feedback(tiny):
    """A toy with a known answer where the first try is uninformative: each instance hides one of 5
    tokens; the first guess is right by chance only, and after a wrong guess the feedback turn shows
    the hidden token. Per-call credit must teach the policy to copy it at the second try."""
    import torch

    from models.train.data import ChatCodec
    from models.train.evaluate import generate_batch

    model, tok = tiny
    model = copy.deepcopy(model)
    codec = ChatCodec(tok)
    torch.manual_seed(1)
    rng = random.Random(1)
    secrets = list(range(100, 105))
    prompt, group = [5, 6, 7], 8
    # like Init, the policy starts knowing the answer format: a guess among the 5 tokens, uniform,
    # whatever the context (so a second try copies the shown token only by chance, 1 in 5)
    warm = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        ctxs = [prompt] * 16 + [prompt + [rng.choice(secrets), 8, rng.choice(secrets), 9] for _ in range(16)]
        ids = torch.tensor(ctxs[16:])
        logits = torch.cat([model(input_ids=torch.tensor(ctxs[:16])).logits[:, -1], model(input_ids=ids).logits[:, -1]])
        target = torch.tensor([rng.choice(secrets) for _ in range(32)])
        loss = torch.nn.functional.cross_entropy(logits, target)
        warm.zero_grad()
        loss.backward()
        warm.step()
    cfg = GRPOConfig(lr=1e-2, epochs=2, minibatch_turns=128, group_size=group, kl_coef=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    second = []
    for _ in range(70):
        model.eval()
        hidden = [rng.choice(secrets) for _ in range(8) for _ in range(group)]   # 8 instances x a group each
        first = generate_batch(model, codec, [prompt] * len(hidden), max_new_tokens=1, temperature=1.0, top_p=1.0)
        turns, returns, success = [], [], []
        retry = [i for i, (g, h) in enumerate(zip(first, hidden)) if g.ids[:1] != [h]]
        contexts = {i: prompt + first[i].ids[:1] + [8, hidden[i], 9] for i in retry}   # feedback shows the answer
        again = dict(zip(retry, generate_batch(model, codec, [contexts[i] for i in retry], max_new_tokens=1,
                                              temperature=1.0, top_p=1.0))) if retry else {}
        for i, h in enumerate(hidden):
            r1 = 1.0 if first[i].ids[:1] == [h] else 0.0
            turns.append(Turn(i, prompt, first[i].ids[:1], r1))
            if r1:
                returns.append([1.0])
                success.append(True)
                continue
            r2 = 1.0 if again[i].ids[:1] == [h] else 0.0
            turns.append(Turn(i, contexts[i], again[i].ids[:1], r2))
            returns.append(rewards_to_go([r1, r2], 1.0))
            success.append(bool(r2))
        second.append(sum(again[i].ids[:1] == [hidden[i]] for i in retry) / max(1, len(retry)))
        per = call_advantages(returns, success, group, uniform="return")
        order = sorted(range(len(turns)), key=lambda k: (turns[k].episode, k))
        turns = [turns[k] for k in order]
        seen: dict[int, int] = {}
        adv = []
        for t in turns:
            c = seen.get(t.episode, 0)
            seen[t.episode] = c + 1
            adv.append(per[t.episode][c])
        with torch.no_grad():
            old = [reply_logprobs(model, turns[i:i + cfg.minibatch_turns], codec.pad_id)[0]
                   for i in range(0, len(turns), cfg.minibatch_turns)]
        model.train()
        policy_update(model, opt, turns, adv, old, cfg, codec.pad_id)
    early, late = sum(second[:5]) / 5, sum(second[-5:]) / 5
    # chance is 1 in 5; a policy that reads the feedback copies it (this toy plateaus near 0.75)
    assert early < 0.4, second
    assert late > 0.6 and late > early + 0.3, second


@pytest.mark.parametrize("task, val_hands", [("gp-l", 32), ("virl-l", 64)])
def test_unseen_validation_keeps_its_problems_out_of_the_rollouts(task, val_hands):
    """`val_unseen`: no rollout is a problem a validation hand poses (GP: the same card multiset;
    V-IRL: the same route), which the plain stream does pose; holding out every problem is refused."""
    from game.tasks import get_task
    from models.train.grpo import GRPOConfig, Rollouts

    spec = get_task(task)
    plain = Rollouts(GRPOConfig(task=task, val_hands=val_hands), None)
    held = {spec.recall_key(x) for x in plain.validation()}
    assert any(spec.recall_key(x) in held for x in plain.instances(300))
    unseen = Rollouts(GRPOConfig(task=task, val_hands=val_hands, val_unseen=True), None)
    assert unseen.validation() == plain.validation()
    rollouts = unseen.instances(150) + unseen.instances(150)
    assert len(rollouts) == 300 and not any(spec.recall_key(x) in held for x in rollouts)
    with pytest.raises(ValueError, match="fewer val_hands"):
        Rollouts(GRPOConfig(task="gp-l", val_hands=8000, val_unseen=True), None).instances(4)   # ~700 multisets
