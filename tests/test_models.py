import pytest
import torch

from bilm import models
from bilm.checkpoint import load_checkpoint, save_checkpoint
from bilm.data import pad_sentences
from bilm.errors import BilmError
from bilm.models import Batch, LockedDropout, ModelConfig, build_model
from bilm.tokenizer import Tokenizer

V = 40


def _cfg(kind, **kw):
    return ModelConfig(
        **dict(dict(kind=kind, vocab_size=V, emb_size=8, hidden_size=12, layers=2, cutoffs=[10, 25]), **kw)
    )


@pytest.mark.parametrize("output", ["full", "adaptive"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-tanh", "rnn-relu"])
def test_bi_prediction_never_sees_the_word_it_predicts(cell, output):
    torch.manual_seed(0)
    model = build_model(_cfg("bi", cell=cell, output=output)).eval()
    batch = pad_sentences([[5, 6, 7, 8, 9], [10, 11]], 2, 3, 0)
    changed = batch.inputs.clone()
    changed[0, 3] = 20  # the word at position t = 2 of sentence 0
    before, after = model(batch.inputs, batch.lengths), model(changed, batch.lengths)
    assert torch.equal(before[0, 2], after[0, 2])
    assert not torch.allclose(before[0, 1], after[0, 1])  # its neighbours do see it
    assert not torch.allclose(before[0, 3], after[0, 3])
    assert torch.equal(before[1, :2], after[1, :2])  # other sentences untouched


@pytest.mark.parametrize(
    "lever",
    [dict(embed_dropout=0.3), dict(weight_drop=0.5), dict(combine="mlp"), dict(dropout=0.3), dict(adaptive_input=True)],
    ids=str,
)
def test_bi_never_sees_the_word_it_predicts_through_any_training_input_path(lever):
    """In training too: the same random masks (same seed), one word changed, its own prediction unchanged."""
    torch.manual_seed(0)
    model = build_model(_cfg("bi", **lever)).train()
    batch = pad_sentences([[5, 6, 7, 8, 9], [10, 11]], 2, 3, 0)
    changed = batch.inputs.clone()
    changed[0, 3] = 20

    def features(ids):
        torch.manual_seed(3)  # masks that keep both words 8 and 20, so the change can reach the neighbours
        return model(ids, batch.lengths)

    before, after = features(batch.inputs), features(changed)
    assert torch.equal(before[0, 2], after[0, 2])
    assert not torch.allclose(before[0, 1], after[0, 1])


def test_weight_drop_masks_hidden_to_hidden_weights_only_in_training_and_leaves_the_parameters_alone(monkeypatch):
    torch.manual_seed(0)
    model = build_model(_cfg("uni", weight_drop=0.5, dropout=0.0))
    ids = torch.randint(5, V, (3, 7))
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(1)
    a, _ = model.train()(ids)
    torch.manual_seed(2)
    b, _ = model(ids)
    assert not torch.allclose(a, b)  # a fresh DropConnect mask per batch
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    plain = build_model(_cfg("uni", dropout=0.0))
    plain.load_state_dict(model.state_dict())  # the same parameters as a plain stack: checkpoints unchanged
    assert torch.equal(model.eval()(ids)[0], plain.eval()(ids)[0])  # eval: no mask
    model.train()
    dropped_hh = []  # the masks fall on weight_hh only: weight_ih reaches the stack whole
    call = torch.func.functional_call

    def spy(module, weights, args):
        dropped_hh.append(sorted(weights))
        return call(module, weights, args)

    monkeypatch.setattr(torch.func, "functional_call", spy)
    loss, _ = model.loss(Batch(ids, ids))
    assert dropped_hh == [["weight_hh_l0", "weight_hh_l1"]]
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # the raw weights still learn
    with pytest.raises(ValueError, match="weight drop needs"):
        build_model(_cfg("uni", weight_drop=0.5, cell="esn"))


def test_embedding_dropout_drops_whole_word_types_in_training_only():
    torch.manual_seed(0)
    model = build_model(_cfg("uni", embed_dropout=0.5, dropout=0.0)).train()
    ids = torch.arange(5, V).repeat(3)[None]  # every word three times
    x = model.embed(ids)
    dropped = (x == 0).all(-1)[0]
    assert dropped.any() and not dropped.all()
    for word in range(5, V):  # a type is dropped everywhere in the batch or nowhere
        assert dropped[ids[0] == word].unique().numel() == 1
    kept = ~dropped
    assert torch.allclose(x[0, kept], 2 * model.embedding(ids)[0, kept])  # rescaled by 1 / (1 - p)
    assert torch.equal(model.eval().embed(ids), model.embedding(ids))


def test_padding_does_not_change_a_sentence(tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg("bi")).eval()
    alone = pad_sentences([[5, 6, 7]], 2, 3, 0)
    padded = pad_sentences([[5, 6, 7], list(range(5, 20))], 2, 3, 0)
    a = model.sequence_log_probs(alone.inputs, alone.lengths)[0]
    b = model.sequence_log_probs(padded.inputs, padded.lengths)[0, :3]
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", ["uni", "bi"])
@pytest.mark.parametrize("output", ["full", "adaptive", "adaptive-input"])
def test_save_then_load_gives_identical_logits(kind, output, tmp_path):
    torch.manual_seed(0)
    tied_input = output == "adaptive-input"
    cfg = _cfg(kind, output="adaptive" if tied_input else output, adaptive_input=tied_input)
    model = build_model(cfg).eval()
    tok = Tokenizer.train([[f"w{i}" for i in range(V - 5)]])
    save_checkpoint(tmp_path / "ck", model, tok, {"model": cfg.to_dict()}, {})
    loaded = load_checkpoint(tmp_path / "ck").model
    batch = pad_sentences([[5, 6, 7, 8], [9, 10]], 2, 3, 0)
    assert torch.equal(
        model.sequence_log_probs(batch.inputs, batch.lengths), loaded.sequence_log_probs(batch.inputs, batch.lengths)
    )


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_a_checkpoint_from_before_the_newer_model_fields_still_loads_as_it_was(kind, tmp_path):
    import json

    torch.manual_seed(0)
    cfg = _cfg(kind, unigram_bias=False, adaptive_input=False, tail_bias=False)
    model = build_model(cfg).eval()
    tok = Tokenizer.train([[f"w{i}" for i in range(V - 5)]])
    save_checkpoint(tmp_path / "ck", model, tok, {"model": cfg.to_dict()}, {})
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    for field in ("unigram_bias", "aux_lm", "embed_dropout", "weight_drop", "combine", "adaptive_input", "tail_bias"):
        del config["model"][field]  # what a checkpoint of an earlier version holds
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "ck").model
    batch = pad_sentences([[5, 6, 7, 8], [9, 10]], 2, 3, 0)
    assert torch.equal(
        model.sequence_log_probs(batch.inputs, batch.lengths), loaded.sequence_log_probs(batch.inputs, batch.lengths)
    )


def test_adaptive_input_reads_each_words_vector_from_its_own_output_weights():
    torch.manual_seed(0)
    model = build_model(_cfg("uni", adaptive_input=True, emb_size=64, hidden_size=64, cutoffs=[10, 25]))
    asm = model.output.asm
    head, (proj0, words0), (proj1, words1) = asm.head.weight, asm.tail[0], asm.tail[1]
    x = model.embedding(torch.tensor([[3, 12, 30]]))[0]  # one word from the head and from each cluster
    assert torch.equal(x[0], head[3])
    assert torch.allclose(x[1], words0.weight[12 - 10] @ proj0.weight)  # (16,) @ (16, 64): back to E
    assert torch.allclose(x[2], words1.weight[30 - 25] @ proj1.weight)  # (4,) @ (4, 64)
    assert x.shape == (3, 64)
    untied = build_model(_cfg("uni", emb_size=64, hidden_size=64, cutoffs=[10, 25], adaptive_input=False))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(model) == V * 64  # no V x E input table of its own
    x.sum().backward()  # reading a cluster word trains that word's output row and its cluster's projection
    assert words0.weight.grad[2].abs().sum() > 0 and proj1.weight.grad.abs().sum() > 0
    assert words0.weight.grad[3].abs().sum() == 0


def test_uni_sequence_scores_match_step_by_step_log_probs():
    torch.manual_seed(0)
    model = build_model(_cfg("uni")).eval()
    ids = torch.tensor([[3, 5, 6, 7, 3]])
    scores = model.sequence_log_probs(ids, torch.tensor([3]))[0]
    for t in range(4):
        h, _ = model(ids[:, : t + 1])
        assert torch.allclose(scores[t], model.log_prob(h[0, -1:])[0, ids[0, t + 1]], atol=1e-5)


def test_adaptive_softmax_is_a_proper_distribution():
    model = build_model(_cfg("uni")).eval()
    h, _ = model(torch.tensor([[3, 5, 6]]))
    assert torch.allclose(model.log_prob(h[0]).exp().sum(-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("n", [1, 17, 40, 100])
def test_adaptive_softmax_scores_and_gradients_are_torchs_whatever_the_row_padding(n, monkeypatch):
    """Rows are padded to a few sizes (models.padded_rows, in bf16); what comes out must not show it."""
    monkeypatch.setattr(models, "reduced_precision", lambda x: True)  # pad in float32, to compare exactly
    torch.manual_seed(n)
    output = build_model(_cfg("uni", emb_size=16, hidden_size=16, tail_bias=False)).output
    h = torch.randn(n, 16, requires_grad=True)
    targets = torch.randint(0, V, (n,))
    ours = output.target_log_prob(h, targets)
    theirs = output.asm(h, targets).output
    assert ours.shape == (n,) and torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(output.log_prob(h), output.asm.log_prob(h), atol=1e-6)
    params = [h, *output.parameters()]
    grads = [torch.autograd.grad(x.sum(), params, allow_unused=True, materialize_grads=True) for x in (ours, theirs)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_uni_loss_is_mean_negative_log_likelihood():
    model = build_model(_cfg("uni", output="full")).eval()
    ids = torch.randint(5, V, (2, 6))
    loss, _ = model.loss(Batch(ids[:, :-1], ids[:, 1:]))
    h, _ = model(ids[:, :-1])
    logp = model.log_prob(h.reshape(-1, 12)).gather(1, ids[:, 1:].reshape(-1, 1))
    assert torch.allclose(loss, -logp.mean(), atol=1e-6)


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_untrained_model_starts_at_the_unigram_distribution(output):
    cfg = _cfg("uni", vocab_size=60, emb_size=12, output=output, cutoffs=[10, 30])  # no tying projection
    model = build_model(cfg).eval()
    counts = torch.randint(0, 1000, (60,))
    model.start_at_unigram(counts)
    logp = model.log_prob(torch.zeros(1, cfg.hidden_size))[0]  # zero features: the bias alone speaks
    unigram = (counts + 1.0) / (counts + 1.0).sum()
    if output == "full":
        assert torch.allclose(logp.exp(), unigram, atol=1e-6)
    else:  # every word, the clusters' too (tail biases)
        assert torch.allclose(logp.exp(), unigram, atol=1e-6)
        untailed = build_model(ModelConfig(**{**cfg.to_dict(), "tail_bias": False})).eval()
        untailed.start_at_unigram(counts)  # as before tail biases: head words exact, each cluster spread evenly
        logp = untailed.log_prob(torch.zeros(1, cfg.hidden_size))[0]
        assert torch.allclose(logp[:10].exp(), unigram[:10], atol=1e-6)
        assert torch.allclose(logp[10:30].exp().sum(), unigram[10:30].sum(), atol=1e-6)
        assert torch.allclose(logp[10:30], logp[10:30].mean().expand(20), atol=1e-5)


def test_locked_dropout_drops_the_same_units_at_every_step_and_nothing_in_eval():
    drop, x = LockedDropout(0.5), torch.ones(8, 30, 16)
    y = drop(x)
    assert torch.equal(y, y[:, :1].expand_as(y))  # one mask per sequence, shared over time
    assert set(y.unique().tolist()) == {0.0, 2.0} and not torch.equal(y[0], y[1])  # rescaled; rows differ
    assert torch.equal(drop.eval()(x), x)


def test_corrupt_or_mismatched_checkpoints_give_clear_errors(tmp_path):
    cfg = _cfg("uni")
    model = build_model(cfg)
    tok = Tokenizer.train([[f"w{i}" for i in range(V - 5)]])
    save_checkpoint(tmp_path / "ck", model, tok, {"model": cfg.to_dict()}, {})
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BilmError, match="corrupt"):
        load_checkpoint(tmp_path / "ck")
    small = Tokenizer.train([["a", "b"]])
    save_checkpoint(tmp_path / "ck2", model, small, {"model": cfg.to_dict()}, {})
    with pytest.raises(BilmError, match="tokenizer has 7 words but config.json says vocab_size=40"):
        load_checkpoint(tmp_path / "ck2")
    other = build_model(_cfg("uni", hidden_size=6))
    save_checkpoint(tmp_path / "ck3", other, tok, {"model": cfg.to_dict()}, {})
    with pytest.raises(BilmError, match="holds the weights of hidden_size=6"):  # the field is named
        load_checkpoint(tmp_path / "ck3")
    untied = build_model(_cfg("uni", adaptive_input=False))
    save_checkpoint(tmp_path / "ck4", untied, tok, {"model": cfg.to_dict()}, {})
    with pytest.raises(BilmError, match="says adaptive_input=True but .* holds the weights of adaptive_input=False"):
        load_checkpoint(tmp_path / "ck4")
    (tmp_path / "ck3" / "config.json").write_text("{broken")
    with pytest.raises(BilmError, match="config.json is corrupt"):
        load_checkpoint(tmp_path / "ck3")


def test_unigram_bias_start_is_on_except_for_bi_with_a_tied_full_softmax():
    adaptive = dict(vocab_size=30_000, output="adaptive")
    assert ModelConfig(kind="uni", **adaptive).wants_unigram_bias
    assert ModelConfig(kind="bi", **adaptive).wants_unigram_bias
    assert ModelConfig(kind="uni", vocab_size=20, output="full").wants_unigram_bias
    assert not ModelConfig(kind="bi", vocab_size=20, output="full").wants_unigram_bias  # tied: held on a plateau
    assert ModelConfig(kind="bi", vocab_size=20, output="full", tie_weights=False).wants_unigram_bias
    assert not ModelConfig(kind="uni", unigram_bias=False, **adaptive).wants_unigram_bias


def test_aux_lm_trains_each_bi_stack_as_a_language_model_and_nothing_else_changes(corpus, data_dir, tmp_path):
    from bilm.data import DataConfig, prepare
    from bilm.train import train

    from .conftest import tiny_model, tiny_train

    def stack_lm_loss(model, batch):  # what the forward and backward stacks alone say of each word
        model.eval()
        with torch.no_grad():
            left, right = model.context(batch.inputs, batch.lengths)
            mask = torch.arange(left.size(1))[None] < batch.lengths[:, None]
            targets = batch.inputs[:, 1:-1][mask]
            return [-model.target_log_prob(h[mask], targets).mean().item() for h in (left, right)]

    data = prepare(DataConfig(str(corpus)), data_dir=data_dir, log=lambda s: None)
    batch = pad_sentences(list(data.sentences("valid")), data.tokenizer.bos_id, data.tokenizer.eos_id, 0)
    losses = {}
    for aux in (0.0, 1.0):
        out = tmp_path / f"aux{aux}"
        train(DataConfig(str(corpus)), tiny_model("bi", aux_lm=aux), tiny_train(max_steps=150), out,
              data_dir=data_dir, log=lambda s: None)  # fmt: skip
        losses[aux] = stack_lm_loss(load_checkpoint(out).model, batch)
    # Trained as language models, each stack alone predicts far better than the fill-only model's stacks.
    assert losses[1.0][0] < losses[0.0][0] - 0.5 and losses[1.0][1] < losses[0.0][1] - 0.5
    model = build_model(_cfg("bi", aux_lm=0.0)).eval()
    logp = model.sequence_log_probs(batch.inputs[:, :12] % V, batch.lengths.clamp(max=10))
    mask = torch.arange(logp.size(1))[None] < batch.lengths.clamp(max=10)[:, None]
    plain, _ = model.loss(Batch(batch.inputs[:, :12] % V, lengths=batch.lengths.clamp(max=10)))
    assert plain.item() == pytest.approx(-(logp * mask).sum().item() / mask.sum().item(), rel=1e-5)  # aux 0: as before
