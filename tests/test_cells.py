import math

import pytest
import torch
from torch import nn

from bilm.cells import CELLS, LoopRNN, make_rnn, spectral_radius
from bilm.models import Batch, ModelConfig, build_model


def batch_for(kind: str, vocab: int = 30) -> Batch:
    torch.manual_seed(0)
    if kind == "uni":
        ids = torch.randint(5, vocab, (3, 9))
        return Batch(ids[:, :-1], ids[:, 1:])
    words = torch.randint(5, vocab, (3, 6))
    ids = torch.cat([torch.full((3, 1), 2), words, torch.full((3, 1), 3)], 1)
    return Batch(ids, lengths=torch.tensor([6, 6, 6]))


@pytest.mark.parametrize("kind", ["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_forward_and_backward_in_uni_and_bi_models(kind, cell):
    cfg = ModelConfig(kind=kind, vocab_size=30, cell=cell, emb_size=8, hidden_size=12, layers=2, output="full")
    model = build_model(cfg)
    loss, _ = model.loss(batch_for(kind))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.embedding.weight.grad.abs().sum() > 0
    stacks = [model.rnn] if kind == "uni" else [model.fwd, model.bwd]
    for stack in stacks:
        for p in stack.parameters():
            assert (p.grad is None) == (cell == "esn")


def test_esn_reservoir_is_frozen_sparse_and_at_the_asked_spectral_radius():
    torch.manual_seed(0)
    esn = make_rnn("esn", 10, 200, 1, 0.0, sr=0.95, rc_connectivity=0.1)
    assert not any(p.requires_grad for p in esn.parameters())
    assert spectral_radius(esn.weight_hh_l0) == pytest.approx(0.95, rel=1e-4)
    assert (esn.weight_hh_l0 != 0).float().mean().item() == pytest.approx(0.1, abs=0.01)
    model = build_model(ModelConfig(vocab_size=30, cell="esn", emb_size=8, hidden_size=12, layers=1, output="full"))
    before = [p.clone() for p in model.rnn.parameters()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.loss(batch_for("uni"))[0].backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.rnn.parameters(), strict=True))


def test_leaky_esn_mixes_old_state_and_new_activation_by_the_leak_rate():
    torch.manual_seed(0)
    esn = make_rnn("esn", 3, 5, 1, 0.0, lr=0.25)
    x = torch.randn(1, 2, 3)
    out, _ = esn(x)
    w_ih, w_hh, b_ih, b_hh = esn.weight_ih_l0, esn.weight_hh_l0, esn.bias_ih_l0, esn.bias_hh_l0
    h1 = 0.25 * torch.tanh(w_ih @ x[0, 0] + b_ih + b_hh)
    h2 = 0.75 * h1 + 0.25 * torch.tanh(w_ih @ x[0, 1] + w_hh @ h1 + b_ih + b_hh)
    torch.testing.assert_close(out[0], torch.stack([h1, h2]))


def test_loop_rnn_with_tanh_matches_the_fused_tanh_rnn():
    torch.manual_seed(0)
    fused = nn.RNN(4, 6, num_layers=2, batch_first=True)
    loop = LoopRNN(4, 6, num_layers=2, activation=torch.tanh)
    loop.load_state_dict(fused.state_dict())
    x, h0 = torch.randn(2, 7, 4), torch.randn(2, 2, 6)
    for a, b in zip(fused(x, h0), loop(x, h0), strict=True):
        torch.testing.assert_close(a, b)


def test_lstm_forget_bias_sets_the_total_forget_gate_bias():
    lstm = make_rnn("lstm", 4, 6, 2, 0.0, forget_bias=1.0)
    for layer in range(2):
        total = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        torch.testing.assert_close(total[6:12], torch.ones(6))


def test_irnn_starts_from_identity_recurrence_and_zero_biases():
    irnn = make_rnn("irnn", 4, 6, 1, 0.0)
    assert irnn.nonlinearity == "relu"
    torch.testing.assert_close(irnn.weight_hh_l0, torch.eye(6))
    assert not irnn.bias_ih_l0.any() and not irnn.bias_hh_l0.any()


def test_orthogonal_init_makes_every_gate_block_orthogonal():
    gru = make_rnn("gru", 4, 6, 1, 0.0, init="orthogonal")
    for block in gru.weight_hh_l0.chunk(3):
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)


def test_spectral_init_scales_each_recurrent_block_to_the_asked_radius():
    lstm = make_rnn("lstm", 4, 16, 1, 0.0, init="spectral", sr=1.5)
    for block in lstm.weight_hh_l0.chunk(4):
        assert spectral_radius(block) == pytest.approx(1.5, rel=1e-4)


def test_xavier_init_bounds_weights_by_fan_in_and_out_and_zeroes_biases():
    rnn = make_rnn("rnn-tanh", 4, 6, 1, 0.0, init="xavier")
    assert rnn.weight_ih_l0.abs().max() <= math.sqrt(6 / (4 + 6))
    assert rnn.weight_hh_l0.abs().max() <= math.sqrt(6 / (6 + 6))
    assert not rnn.bias_ih_l0.any() and not rnn.bias_hh_l0.any()


@pytest.mark.parametrize(
    "args, options, message",
    [
        (("tanh", "default"), {}, "unknown cell"),
        (("lstm", "he"), {}, "unknown init"),
        (("lstm", "default"), {"sr": 0.9}, "unknown option"),
        (("irnn", "orthogonal"), {}, "sets its own"),
        (("esn", "default"), {"lr": 0.0}, "leak rate"),
    ],
)
def test_bad_cell_init_or_option_is_a_clear_error(args, options, message):
    cell, init = args
    with pytest.raises(ValueError, match=message):
        make_rnn(cell, 4, 6, 1, 0.0, init, **options)
