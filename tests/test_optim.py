"""fastcnn.optim: update rules against written-out formulas and torch.optim, in-place updates, frozen parameters,
checkpoints that resume bitwise, schedules against written-out values and torch.optim.lr_scheduler, and errors."""
import json
import math

import numpy as np
import pytest

from fastcnn.nn.parameter import Parameter
from fastcnn.optim import SGD, Adam, AdamW, Optimizer, lr_scheduler
from fastcnn.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, ReduceLROnPlateau, StepLR

SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]
STEPS = 10


def make_params(seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(shape)) for shape in shapes]


def make_grads(steps=STEPS, seed=1, shapes=SHAPES):
    """Per step, one gradient per parameter; their scale shrinks over time so AMSGrad's maximum matters."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(shape) / (1 + step)).astype(np.float32) for shape in shapes]
            for step in range(steps)]


def train(optimizer, params, grads):
    for step_grads in grads:
        for param, grad in zip(params, step_grads):
            param.grad[...] = grad
        optimizer.step()


OPTIMIZER_CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, weight_decay=0.2)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (SGD, dict(lr=0.05, momentum=0.8, weight_decay=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, dict()),
    (Adam, dict(lr=0.01, weight_decay=0.1)),
    (Adam, dict(lr=0.1, amsgrad=True)),
    (Adam, dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.05, amsgrad=True)),
    (Adam, dict(lr=0.01, betas=(0.0, 0.0))),
    (AdamW, dict()),
    (AdamW, dict(lr=0.01, weight_decay=0.1)),
    (AdamW, dict(lr=0.05, betas=(0.9, 0.95), weight_decay=0.3, amsgrad=True)),
]
CASE_IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'}"
            for cls, kwargs in OPTIMIZER_CASES]


# -- update rules -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CASES, ids=CASE_IDS)
def test_optimizers_match_torch_over_ten_steps(cls, kwargs):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    params, grads = make_params(), make_grads()
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    torch_optimizer = getattr(torch.optim, cls.__name__)(torch_params, **kwargs)
    optimizer = cls(params, **kwargs)
    for step_grads in grads:
        for param, torch_param, grad in zip(params, torch_params, step_grads):
            param.grad[...] = grad
            torch_param.grad = torch.tensor(grad)
        optimizer.step()
        torch_optimizer.step()
    for param, torch_param in zip(params, torch_params):
        np.testing.assert_allclose(param.data, torch_param.detach().numpy(), rtol=2e-6, atol=2e-7)


def sgd_two_steps(p0, g1, g2, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD's documented rule, written out for two steps in float64."""
    d1 = g1 + weight_decay * p0
    b1 = d1  # the momentum buffer starts as the first gradient
    p1 = p0 - lr * ((d1 + momentum * b1) if nesterov else (b1 if momentum else d1))
    d2 = g2 + weight_decay * p1
    b2 = momentum * b1 + (1 - dampening) * d2
    return p1, p1 - lr * ((d2 + momentum * b2) if nesterov else (b2 if momentum else d2))


@pytest.mark.parametrize("kwargs", [kwargs for cls, kwargs in OPTIMIZER_CASES if cls is SGD])
def test_sgd_matches_the_formula_for_two_steps(kwargs):
    (param,), ((g1,), (g2,)) = make_params(shapes=[(4, 3)]), make_grads(2, shapes=[(4, 3)])
    p0 = param.data.astype(np.float64)
    expected1, expected2 = sgd_two_steps(p0, g1.astype(np.float64), g2.astype(np.float64), **kwargs)
    optimizer = SGD([param], **kwargs)
    train(optimizer, [param], [[g1]])
    np.testing.assert_allclose(param.data, expected1, rtol=1e-6, atol=1e-7)
    train(optimizer, [param], [[g2]])
    np.testing.assert_allclose(param.data, expected2, rtol=1e-6, atol=1e-7)


def test_sgd_momentum_written_out():
    param = Parameter([1.0])
    optimizer = SGD([param], lr=0.1, momentum=0.9)
    param.grad[...] = 1.0
    optimizer.step()  # buffer 1 (the first gradient, not 0.1 * 1), value 1 - 0.1 * 1
    assert param.data[0] == pytest.approx(0.9, rel=1e-6)
    optimizer.step()  # buffer 0.9 * 1 + 1 = 1.9, value 0.9 - 0.19
    assert param.data[0] == pytest.approx(0.71, rel=1e-6)
    assert optimizer.state[param]["momentum_buffer"][0] == pytest.approx(1.9, rel=1e-6)


def adam_two_steps(p0, g1, g2, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   decoupled=False):
    """torch.optim.Adam/AdamW's documented rule, written out for two steps in float64."""
    beta1, beta2 = betas
    values, m, v, v_max, p = [], 0.0, 0.0, 0.0, p0
    for t, g in ((1, g1), (2, g2)):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        m_hat, v_hat = m / (1 - beta1**t), (v_max if amsgrad else v) / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        values.append(p)
    return values


@pytest.mark.parametrize("cls, kwargs", [case for case in OPTIMIZER_CASES if case[0] is not SGD],
                         ids=[i for i, case in zip(CASE_IDS, OPTIMIZER_CASES) if case[0] is not SGD])
def test_adam_and_adamw_match_the_formula_for_two_steps(cls, kwargs):
    (param,), ((g1,), (g2,)) = make_params(shapes=[(4, 3)]), make_grads(2, shapes=[(4, 3)])
    g2 = g2 * np.float32(0.1)  # a smaller second gradient: the second moment falls, so AMSGrad's maximum differs
    expected = adam_two_steps(param.data.astype(np.float64), g1.astype(np.float64), g2.astype(np.float64),
                              decoupled=cls is AdamW, **{"weight_decay": 1e-2 if cls is AdamW else 0.0, **kwargs})
    optimizer = cls([param], **kwargs)
    for grad, want in zip((g1, g2), expected):
        train(optimizer, [param], [[grad]])
        np.testing.assert_allclose(param.data, want, rtol=2e-6, atol=2e-7)


def test_adam_first_step_moves_each_weight_by_lr():
    # After bias correction, the first step is lr * g / (|g| + eps): lr in the direction against the gradient.
    param = Parameter([1.0, 1.0, 1.0])
    param.grad[...] = [3.0, -0.5, 1e-3]
    Adam([param], lr=0.1).step()
    np.testing.assert_allclose(param.data, [0.9, 1.1, 0.9], rtol=1e-5)


def final_values(cls, kwargs, grads):
    shapes = [g.shape for g in grads[0]]
    params = make_params(shapes=shapes)
    train(cls(params, **kwargs), params, grads)
    return np.concatenate([p.data.ravel() for p in params])


def clearly_different(values, others):
    """Farther apart than ten times the tolerances of the comparisons above (rtol 2e-6, atol 2e-7)."""
    return np.abs(values - others).max() > 10 * (2e-6 * np.abs(others).max() + 2e-7)


@pytest.mark.parametrize("cls, kwargs", [case for case in OPTIMIZER_CASES if "amsgrad" in case[1] or
                                         (case[0] is AdamW and "weight_decay" in case[1])])
def test_the_options_under_test_make_a_difference(cls, kwargs):
    """Guards the comparisons above: on their inputs, AMSGrad and decoupled decay change the result by far more
    than the tolerances, so a rule that ignored them would fail."""
    (g1,), (g2,) = make_grads(2, shapes=[(4, 3)])
    for grads in (make_grads(), [[g1], [g2 * np.float32(0.1)]]):
        values = final_values(cls, kwargs, grads)
        if kwargs.get("amsgrad"):
            assert clearly_different(values, final_values(cls, {**kwargs, "amsgrad": False}, grads))
        if cls is AdamW:
            assert clearly_different(values, final_values(Adam, kwargs, grads))


# -- in place, frozen, groups ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs", OPTIMIZER_CASES, ids=CASE_IDS)
def test_updates_are_in_place_and_frozen_parameters_stay(cls, kwargs):
    params = make_params()
    params[1].requires_grad = False
    frozen_before = params[1].data.copy()
    data_ids, grad_ids = [p.data for p in params], [p.grad for p in params]
    optimizer = cls(params, **kwargs)
    trainable_before = params[0].data.copy()
    train(optimizer, params, make_grads(3))  # nonzero gradients reach the frozen parameter too
    assert all(p.data is d and p.grad is g for p, d, g in zip(params, data_ids, grad_ids))
    np.testing.assert_array_equal(params[1].data, frozen_before)
    assert not optimizer.state.get(params[1])
    assert not np.array_equal(params[0].data, trainable_before)
    optimizer.zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(params, grad_ids))


def test_a_step_allocates_no_parameter_sized_temporaries():
    tracemalloc = pytest.importorskip("tracemalloc")
    params = make_params(shapes=[(256, 256)])
    for cls, kwargs in [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)),
                        (Adam, dict(weight_decay=1e-4, amsgrad=True)), (AdamW, dict(amsgrad=True))]:
        optimizer = cls(params, **kwargs)
        train(optimizer, params, make_grads(1, shapes=[(256, 256)]))  # the first step creates the state
        tracemalloc.start()
        try:
            optimizer.step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < params[0].data.nbytes // 4, f"{cls.__name__} step allocated {peak} bytes"


def test_param_groups_override_defaults_and_lr_changes_take_effect():
    first, second = make_params(shapes=[(3,), (2, 2)])
    optimizer = SGD([{"params": [first]}, {"params": second, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]
    assert optimizer.param_groups[1]["momentum"] == 0.9 and optimizer.param_groups[0]["momentum"] == 0.0
    assert optimizer.param_groups[1]["params"] == [second]
    before = [first.data.copy(), second.data.copy()]
    first.grad[...], second.grad[...] = 1.0, 2.0
    optimizer.step()
    np.testing.assert_allclose(first.data, before[0] - 0.1)
    np.testing.assert_allclose(second.data, before[1] - 1.0)
    optimizer.param_groups[0]["lr"] = 0.0  # lr 0 is allowed: the parameter stays
    frozen_value = first.data.copy()
    optimizer.step()
    np.testing.assert_array_equal(first.data, frozen_value)


def test_params_may_be_a_generator_and_groups_may_be_added():
    params = make_params()
    optimizer = Adam(p for p in params[:2])
    optimizer.add_param_group({"params": [params[2]], "lr": 0.5})
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 1]
    assert optimizer.param_groups[1]["betas"] == (0.9, 0.999)
    train(optimizer, params, make_grads(1))  # the scratch space grew with the larger parameter
    assert optimizer.state[params[2]]["step"] == 1


def test_step_returns_the_closure_loss():
    (param,) = make_params(shapes=[(2,)])
    assert SGD([param], lr=0.1).step(lambda: 1.5) == 1.5


# -- checkpoints ----------------------------------------------------------------------------------------------------

def save_and_load(state, directory, name):
    """Store a state dict as an .npz of its arrays plus strict JSON of the rest, then read it back."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    np.savez(directory / f"{name}.npz", **arrays)
    (directory / f"{name}.json").write_text(json.dumps({k: v for k, v in state.items() if k not in arrays},
                                                       allow_nan=False))
    loaded = json.loads((directory / f"{name}.json").read_text())
    with np.load(directory / f"{name}.npz") as stored:
        loaded.update({k: stored[k] for k in stored.files})
    return loaded


def assert_json_and_arrays(state):
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32, key
        else:
            assert json.loads(json.dumps(value, allow_nan=False)) == value, key


RESUME_CASES = [
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.2)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, amsgrad=True)),
    (AdamW, dict(lr=0.01, weight_decay=0.2)),
]


@pytest.mark.parametrize("cls, kwargs", RESUME_CASES, ids=[c.__name__ for c, _ in RESUME_CASES])
def test_training_resumed_from_a_checkpoint_continues_bitwise(cls, kwargs, tmp_path):
    params, grads = make_params(), make_grads(10)
    params[2].requires_grad = False  # no state for it: the checkpoint must cope
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": kwargs["lr"] / 2}]
    optimizer = cls(groups, **kwargs)
    train(optimizer, params, grads[:5])
    optimizer.param_groups[0]["lr"] *= 0.5  # as a scheduler would: the checkpoint must carry it
    state = optimizer.state_dict()
    assert_json_and_arrays(state)
    assert not any(key.startswith("state.2.") for key in state)

    copies = [Parameter(p.data, requires_grad=p.requires_grad) for p in params]
    resumed = cls([{"params": copies[:1]}, {"params": copies[1:]}], lr=0.5)  # other hyper-parameters, to be loaded
    resumed.load_state_dict(save_and_load(state, tmp_path, "optimizer"))
    assert resumed.state_dict().keys() == state.keys()
    train(optimizer, params, grads[5:])
    train(resumed, copies, grads[5:])
    for original, copy in zip(params, copies):
        assert original.data.tobytes() == copy.data.tobytes()


def test_state_dict_is_a_copy_and_loading_copies():
    params = make_params()
    optimizer = SGD(params, lr=0.1, momentum=0.9)
    train(optimizer, params, make_grads(2))
    state = optimizer.state_dict()
    saved = state["state.0.momentum_buffer"].copy()
    train(optimizer, params, make_grads(1))
    np.testing.assert_array_equal(state["state.0.momentum_buffer"], saved)
    optimizer.load_state_dict(state)
    assert optimizer.state[params[0]]["momentum_buffer"] is not state["state.0.momentum_buffer"]


def load_error_cases():
    def adam_state():
        params = make_params()
        optimizer = Adam(params, amsgrad=True)
        train(optimizer, params, make_grads(1))
        return optimizer.state_dict()

    def edit(changes):
        """The checkpoint with keys replaced, or removed where the new value is None."""
        state = adam_state()
        for key, value in changes.items():
            if value is None:
                del state[key]
            else:
                state[key] = value
        return state

    def group_edit(**changes):
        state = adam_state()
        state["param_groups"][0].update(changes)
        return state

    return [
        ([1, 2], TypeError, r"Adam.load_state_dict: state_dict must be a dict; got \[1, 2\]"),
        ({}, ValueError, r"Adam.load_state_dict: missing key 'param_groups'"),
        (edit({"param_groups": []}), ValueError,
         r"param_groups must be a list of 1 groups, one per group of the optimizer; got 0"),
        (group_edit(params=[0, 1]), ValueError,
         r"the optimizer's param_groups\[0\] has 3 parameters; the checkpoint's has 2"),
        (group_edit(params=[0, 0, 1]), ValueError, r"parameter number 0 appears twice"),
        (group_edit(lr=-1.0), ValueError,
         r"Adam.load_state_dict: lr must be a finite float >= 0; got -1.0 \(in the checkpoint's param_groups\[0\]\)"),
        (group_edit(momentum=0.9), ValueError, r"hyper-parameters do not match .*unexpected \['momentum'\]"),
        (edit({"state.0.exp_avg": np.zeros((4, 3), np.float32)}), ValueError,
         r"size mismatch for state.0.exp_avg: checkpoint has \(4, 3\), parameter has \(3, 4\)"),
        (edit({"state.0.exp_avg": [0.0] * 12}), TypeError,
         r"state.0.exp_avg must be a floating NumPy array; got \[0.0"),
        (edit({"state.1.max_exp_avg_sq": None}), ValueError,
         r"state.1 must hold \['step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'\] .*"
         r"got \['exp_avg', 'exp_avg_sq', 'step'\]"),
        (edit({"state.1.momentum_buffer": np.zeros(5, np.float32)}), ValueError, r"state.1 must hold .*nothing but"),
        (edit({"state.0.step": 0}), ValueError, r"state.0.step must be an int >= 1; got 0"),
        (edit({"state.0.step": 1.0}), TypeError, r"state.0.step must be an int >= 1; got 1.0"),
        (edit({"state.3.step": 1}), ValueError,
         r"unexpected key 'state.3.step': the optimizer has parameters 0 to 2"),
        (edit({"extra": 1}), ValueError,
         r"unexpected key 'extra'; expected 'param_groups' and 'state.<parameter number>.<name>'"),
    ]


@pytest.mark.parametrize("state, error, pattern", load_error_cases())
def test_load_state_dict_errors_leave_the_optimizer_unchanged(state, error, pattern):
    params = make_params()
    optimizer = Adam(params, lr=0.01, amsgrad=True)
    train(optimizer, params, make_grads(2))
    before = optimizer.state_dict()
    with pytest.raises(error, match=pattern):
        optimizer.load_state_dict(state)
    after = optimizer.state_dict()
    assert after.keys() == before.keys() and after["param_groups"] == before["param_groups"]
    assert all(np.array_equal(after[k], before[k]) for k in before if k != "param_groups")


def test_a_checkpoint_of_another_optimizer_is_refused():
    params = make_params()
    sgd = SGD(params, lr=0.1, momentum=0.9)
    train(sgd, params, make_grads(1))
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: hyper-parameters do not match .*missing \['amsgrad', "
                                         r"'betas', 'eps'\], unexpected \['dampening', 'momentum', 'nesterov'\]"):
        Adam(params).load_state_dict(sgd.state_dict())


# -- schedulers -----------------------------------------------------------------------------------------------------

def lr_sequence(scheduler_factory, epochs=15, lrs=(1.0,)):
    params = make_params(shapes=[(1,)] * len(lrs))
    optimizer = SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=1.0)
    scheduler = scheduler_factory(optimizer)
    sequence = []
    for _ in range(epochs):
        sequence.append(scheduler.get_last_lr())
        assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return sequence


def test_step_lr_written_out():
    sequence = lr_sequence(lambda o: StepLR(o, step_size=3, gamma=0.5), epochs=9)
    assert [lr for (lr,) in sequence] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25], rel=1e-15)


def test_exponential_lr_written_out():
    sequence = lr_sequence(lambda o: ExponentialLR(o, gamma=0.5), epochs=5)
    assert [lr for (lr,) in sequence] == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625], rel=1e-15)


def test_cosine_annealing_lr_written_out():
    sequence = lr_sequence(lambda o: CosineAnnealingLR(o, T_max=4, eta_min=0.1), epochs=7, lrs=(1.1,))
    half_cos = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(7)]  # 1, .854, .5, .146, 0, .146, .5
    assert [lr for (lr,) in sequence] == pytest.approx([0.1 + 1.0 * c for c in half_cos], rel=1e-14)
    assert sequence[4] == pytest.approx([0.1]) and sequence[2] == pytest.approx([0.6])


SCHEDULER_CASES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=1.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=6, eta_min=0.01)),
    ("CosineAnnealingLR", dict(T_max=1)),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULER_CASES, ids=[f"{n}-{k}" for n, k in SCHEDULER_CASES])
def test_schedulers_match_torch_over_fifteen_epochs(name, kwargs):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    lrs = (0.1, 0.03)
    ours = lr_sequence(lambda o: getattr(lr_scheduler, name)(o, **kwargs), lrs=lrs)
    weights = [torch.zeros(1, requires_grad=True) for _ in lrs]
    optimizer = torch.optim.SGD([{"params": [w], "lr": lr} for w, lr in zip(weights, lrs)], lr=1.0)
    scheduler = getattr(torch.optim.lr_scheduler, name)(optimizer, **kwargs)
    theirs = []
    for _ in range(15):
        theirs.append(scheduler.get_last_lr())
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=1e-15)


def test_schedulers_record_initial_lr_and_chain():
    (param,) = make_params(shapes=[(1,)])
    optimizer = SGD([param], lr=1.0)
    first = StepLR(optimizer, step_size=1, gamma=0.5)
    assert optimizer.param_groups[0]["initial_lr"] == 1.0 and first.base_lrs == [1.0]
    first.step()
    # A second scheduler keeps the initial_lr the first recorded, and starts from the current lr.
    second = ExponentialLR(optimizer, gamma=0.9)
    assert second.base_lrs == [1.0] and optimizer.param_groups[0]["initial_lr"] == 1.0
    assert second.get_last_lr() == [0.5]
    first.step()
    second.step()  # chainable: both multiply the current lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 * 0.9)


def plateau_lrs(metrics, **kwargs):
    (param,) = make_params(shapes=[(1,)])
    optimizer = SGD([param], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, **kwargs)
    assert "initial_lr" not in optimizer.param_groups[0]
    lrs = []
    for metric in metrics:
        scheduler.step(metric)
        lrs.append(optimizer.param_groups[0]["lr"])
        assert scheduler.get_last_lr() == [lrs[-1]]
    return lrs


def test_reduce_lr_on_plateau_waits_for_patience():
    # The first metric always improves on the start (infinity); after it, 3 > patience=2 bad epochs reduce.
    assert plateau_lrs([1.0] * 6, patience=2, factor=0.5) == [1, 1, 1, 0.5, 0.5, 0.5]
    # An improvement resets the count.
    assert plateau_lrs([1.0, 1.0, 0.5, 0.5, 0.5, 0.5], patience=2, factor=0.5) == [1, 1, 1, 1, 1, 0.5]


def test_reduce_lr_on_plateau_honours_cooldown():
    assert plateau_lrs([5.0] * 7, patience=1, factor=0.5, cooldown=0) == [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    # Two epochs after each reduction are not counted.
    assert plateau_lrs([5.0] * 7, patience=1, factor=0.5, cooldown=2) == [1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]


def test_reduce_lr_on_plateau_honours_min_lr():
    assert plateau_lrs([1.0] * 4, patience=0, factor=0.1, min_lr=0.05) == pytest.approx([1, 0.1, 0.05, 0.05])


def test_reduce_lr_on_plateau_thresholds_and_max_mode():
    # mode max, absolute threshold 0.1: gains of 0.05 are bad epochs, a gain of 0.2 is an improvement.
    metrics = [0.5, 0.55, 0.6, 0.8, 0.85, 0.9]
    assert plateau_lrs(metrics, mode="max", threshold=0.1, threshold_mode="abs", patience=1,
                       factor=0.5) == [1, 1, 0.5, 0.5, 0.5, 0.25]
    # mode min, relative threshold 10%: 0.95 is not 10% below 1.0, 0.85 is.
    assert plateau_lrs([1.0, 0.95, 0.85, 0.8], threshold=0.1, patience=0, factor=0.5) == [1, 0.5, 0.5, 0.25]
    # Improving means strictly better: with no threshold, an equal metric is a bad epoch.
    assert plateau_lrs([1.0, 1.0, 1.0], threshold=0.0, patience=1, factor=0.5) == [1, 1, 0.5]


@pytest.mark.parametrize("kwargs", [dict(), dict(mode="max", threshold_mode="abs", threshold=0.05, cooldown=1),
                                    dict(patience=1, cooldown=2, min_lr=0.004, factor=0.3)])
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch", exc_type=ImportError)
    metrics = [1.0, 0.9, 0.95, 0.95, 0.93, 0.97, 0.9, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7, 0.4, 0.4]
    metrics = metrics * 2
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **{"patience": 2, **kwargs})
    theirs = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        theirs.append(optimizer.param_groups[0]["lr"])
    (param,) = make_params(shapes=[(1,)])
    ours_optimizer = SGD([param], lr=0.1)
    ours_scheduler = ReduceLROnPlateau(ours_optimizer, **{"patience": 2, **kwargs})
    ours = []
    for metric in metrics:
        ours_scheduler.step(metric)
        ours.append(ours_optimizer.param_groups[0]["lr"])
    assert len(set(ours)) > 1
    assert ours == pytest.approx(theirs, rel=1e-15)


@pytest.mark.parametrize("factory, drive", [
    (lambda o: StepLR(o, step_size=2, gamma=0.5), lambda s, epoch: s.step()),
    (lambda o: CosineAnnealingLR(o, T_max=5, eta_min=0.001), lambda s, epoch: s.step()),
    # At the checkpoint two bad epochs are counted: the next one reduces the lr, if the count was restored.
    (lambda o: ReduceLROnPlateau(o, patience=2, cooldown=1, factor=0.5),
     lambda s, epoch: s.step([1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.8, 0.8][epoch])),
], ids=["StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"])
def test_scheduler_resumed_from_a_checkpoint_continues_the_same(factory, drive, tmp_path):
    def fresh():
        (param,) = make_params(shapes=[(1,)])
        optimizer = SGD([param], lr=0.1, momentum=0.9)
        return optimizer, factory(optimizer)

    optimizer, scheduler = fresh()
    for epoch in range(4):
        drive(scheduler, epoch)
    scheduler_state = scheduler.state_dict()
    assert json.loads(json.dumps(scheduler_state, allow_nan=False)) == scheduler_state
    optimizer_state = save_and_load(optimizer.state_dict(), tmp_path, "optimizer")
    resumed_optimizer, resumed = fresh()
    resumed_optimizer.load_state_dict(optimizer_state)
    resumed.load_state_dict(json.loads(json.dumps(scheduler_state)))
    def hyper_parameters(optimizer):
        return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]

    lr_history = scheduler.get_last_lr()
    for epoch in range(4, 10):
        drive(scheduler, epoch)
        drive(resumed, epoch)
        assert resumed.get_last_lr() == scheduler.get_last_lr()
        assert hyper_parameters(resumed_optimizer) == hyper_parameters(optimizer)
        lr_history.append(scheduler.get_last_lr()[0])
    assert resumed.state_dict() == scheduler.state_dict()
    assert len(set(lr_history)) > 1  # the schedule moved after the checkpoint


# -- errors ---------------------------------------------------------------------------------------------------------

P = Parameter(np.zeros((2, 3)))
Q = Parameter(np.zeros(4))


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: SGD([P], lr=-0.1), ValueError, r"^SGD: lr must be a finite float >= 0; got -0.1$"),
    (lambda: SGD([P], lr=float("nan")), ValueError, r"SGD: lr must be a finite float >= 0; got nan"),
    (lambda: SGD([P], lr=float("inf")), ValueError, r"SGD: lr must be a finite float >= 0; got inf"),
    (lambda: SGD([P], lr="0.1"), TypeError, r"SGD: lr must be a finite float >= 0; got '0.1'"),
    (lambda: SGD([P], lr=None), TypeError, r"SGD: lr must be a finite float >= 0; got None"),
    (lambda: SGD([P], lr=True), TypeError, r"SGD: lr must be a finite float >= 0; got True"),
    (lambda: SGD([P], lr=0.1, momentum=-0.5), ValueError, r"SGD: momentum must be a finite float >= 0; got -0.5"),
    (lambda: SGD([P], lr=0.1, dampening=1.5), ValueError, r"SGD: dampening must be a float in \[0, 1\]; got 1.5"),
    (lambda: SGD([P], lr=0.1, weight_decay=-1e-4), ValueError,
     r"SGD: weight_decay must be a finite float >= 0; got -0.0001"),
    (lambda: SGD([P], lr=0.1, nesterov=True), ValueError,
     r"SGD: nesterov=True requires momentum > 0 and dampening == 0; got momentum=0.0 and dampening=0.0"),
    (lambda: SGD([P], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     r"SGD: nesterov=True requires .*got momentum=0.9 and dampening=0.1"),
    (lambda: SGD([P], lr=0.1, momentum=0.9, nesterov="yes"), TypeError, r"SGD: nesterov must be a bool; got 'yes'"),
    (lambda: Adam([P], lr=-1), ValueError, r"Adam: lr must be a finite float >= 0; got -1"),
    (lambda: Adam([P], betas=(1.0, 0.999)), ValueError, r"Adam: betas\[0\] must be a float in \[0, 1\); got 1.0"),
    (lambda: Adam([P], betas=(0.9, -0.1)), ValueError, r"Adam: betas\[1\] must be a float in \[0, 1\); got -0.1"),
    (lambda: Adam([P], betas=0.9), TypeError, r"Adam: betas must be a pair of floats, each in \[0, 1\); got 0.9"),
    (lambda: Adam([P], betas=(0.9, 0.99, 0.999)), TypeError, r"Adam: betas must be a pair"),
    (lambda: Adam([P], eps=-1e-8), ValueError, r"Adam: eps must be a finite float >= 0; got -1e-08"),
    (lambda: Adam([P], weight_decay=-0.1), ValueError, r"Adam: weight_decay must be a finite float >= 0; got -0.1"),
    (lambda: Adam([P], amsgrad=1), TypeError, r"Adam: amsgrad must be a bool; got 1"),
    (lambda: AdamW([P], weight_decay=-0.01), ValueError, r"AdamW: weight_decay must be a finite float >= 0; got -0.01"),
    (lambda: AdamW([P], betas=(0.9, 1.0)), ValueError, r"AdamW: betas\[1\] must be a float in \[0, 1\); got 1.0"),
    (lambda: SGD([], lr=0.1), ValueError, r"SGD: params must not be empty; got an empty parameter list"),
    (lambda: Adam(iter([])), ValueError, r"Adam: params must not be empty"),
    (lambda: SGD(P, lr=0.1), TypeError, r"SGD: params must be an iterable of Parameters or of dicts .*got Parameter"),
    (lambda: SGD({P, Q}, lr=0.1), TypeError, r"SGD: params must be an ordered iterable .*got a set"),
    (lambda: SGD(5, lr=0.1), TypeError, r"SGD: params must be an iterable of Parameters or of dicts .*got 5"),
    (lambda: SGD([P, np.zeros(4)], lr=0.1), TypeError,
     r"SGD: params must contain only fastcnn Parameters; got ndarray at position 1 \(in param_groups\[0\]\)"),
    (lambda: SGD([P, {"params": [Q]}], lr=0.1), TypeError, r"SGD: params must hold only Parameters or only dicts"),
    (lambda: SGD([P, Q, P], lr=0.1), ValueError,
     r"SGD: a parameter must appear only once; got Parameter\(shape=\(2, 3\)\) at positions 0 and 2"),
    (lambda: Adam([{"params": [P]}, {"params": [Q, P]}]), ValueError,
     r"Adam: a parameter must appear only once; got .* at position 1 \(in param_groups\[1\]\), already at position 0 "
     r"of param_groups\[0\]"),
    (lambda: SGD([{"params": [P], "lr": -1.0}], lr=0.1), ValueError,
     r"SGD: lr must be a finite float >= 0; got -1.0 \(in param_groups\[0\]\)"),
    (lambda: SGD([{"params": [P]}, {"params": [Q], "momentum": -1}], lr=0.1), ValueError,
     r"SGD: momentum must be .*got -1 \(in param_groups\[1\]\)"),
    (lambda: SGD([{"params": [P], "learning_rate": 0.1}], lr=0.1), ValueError,
     r"SGD: unknown hyper-parameter\(s\) \['learning_rate'\] \(in param_groups\[0\]\); expected some of"),
    (lambda: SGD([{"lr": 0.1}], lr=0.1), ValueError, r"SGD: a parameter group must have a 'params' key"),
    (lambda: SGD([{"params": []}], lr=0.1), ValueError, r"SGD: params must not be empty; got a parameter group with"),
], ids=lambda value: None if callable(value) or isinstance(value, type) else value[:40])
def test_optimizer_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_a_bad_lr_set_between_steps_is_caught_at_the_step():
    optimizer = SGD([Parameter(np.zeros(3))], lr=0.1)
    optimizer.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"SGD.step: lr must be a finite float >= 0; got nan"):
        optimizer.step()


def plain_optimizer(groups=1):
    return SGD([{"params": [Parameter(np.zeros(2))]} for _ in range(groups)], lr=0.1)


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: StepLR(plain_optimizer(), 0), ValueError, r"StepLR: step_size must be an int >= 1; got 0"),
    (lambda: StepLR(plain_optimizer(), 2.5), TypeError, r"StepLR: step_size must be an int >= 1; got 2.5"),
    (lambda: StepLR(plain_optimizer(), 2, gamma=0), ValueError, r"StepLR: gamma must be a finite float > 0; got 0"),
    (lambda: StepLR("optimizer", 2), TypeError, r"StepLR: optimizer must be a fastcnn.optim.Optimizer; got str"),
    (lambda: ExponentialLR(plain_optimizer(), gamma=-0.5), ValueError,
     r"ExponentialLR: gamma must be a finite float > 0; got -0.5"),
    (lambda: ExponentialLR(plain_optimizer(), gamma=float("inf")), ValueError, r"ExponentialLR: gamma must be .*inf"),
    (lambda: CosineAnnealingLR(plain_optimizer(), T_max=0), ValueError,
     r"CosineAnnealingLR: T_max must be an int >= 1; got 0"),
    (lambda: CosineAnnealingLR(plain_optimizer(), T_max=10, eta_min=-1e-3), ValueError,
     r"CosineAnnealingLR: eta_min must be a finite float >= 0; got -0.001"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), mode="minimum"), ValueError,
     r"ReduceLROnPlateau: mode must be one of 'min', 'max'; got 'minimum'"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), factor=1.0), ValueError,
     r"ReduceLROnPlateau: factor must be a float in \(0, 1\); got 1.0"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), factor=0), ValueError, r"ReduceLROnPlateau: factor must be .*got 0"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), patience=-1), ValueError,
     r"ReduceLROnPlateau: patience must be an int >= 0; got -1"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), threshold=-1e-4), ValueError,
     r"ReduceLROnPlateau: threshold must be a finite float >= 0; got -0.0001"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), threshold_mode="relative"), ValueError,
     r"ReduceLROnPlateau: threshold_mode must be one of 'rel', 'abs'; got 'relative'"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), cooldown=1.5), TypeError,
     r"ReduceLROnPlateau: cooldown must be an int >= 0; got 1.5"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), min_lr=-0.1), ValueError,
     r"ReduceLROnPlateau: min_lr\[0\] must be a finite float >= 0; got -0.1"),
    (lambda: ReduceLROnPlateau(plain_optimizer(2), min_lr=[0.1]), ValueError,
     r"ReduceLROnPlateau: min_lr must be a list of 2 learning rates, one per parameter group; got \[0.1\]"),
    (lambda: ReduceLROnPlateau(plain_optimizer(), eps=-1.0), ValueError,
     r"ReduceLROnPlateau: eps must be a finite float >= 0; got -1.0"),
    (lambda: ReduceLROnPlateau(plain_optimizer()).step(float("nan")), ValueError,
     r"ReduceLROnPlateau.step: metrics must be a finite number; got nan"),
    (lambda: ReduceLROnPlateau(plain_optimizer()).step(np.float32("inf")), ValueError,
     r"ReduceLROnPlateau.step: metrics must be a finite number; got inf"),
    (lambda: ReduceLROnPlateau(plain_optimizer()).step("low"), TypeError,
     r"ReduceLROnPlateau.step: metrics must be a finite number; got 'low'"),
    (lambda: ReduceLROnPlateau(plain_optimizer()).step(None), TypeError,
     r"ReduceLROnPlateau.step: metrics must be a finite number; got None"),
    (lambda: StepLR(plain_optimizer(), 2).load_state_dict({"step_size": 2}), ValueError,
     r"StepLR.load_state_dict: keys do not match: missing \['base_lrs', 'gamma', 'last_epoch', 'last_lr'\]"),
    (lambda: StepLR(plain_optimizer(), 2).load_state_dict(
        {"step_size": 0, "gamma": 0.1, "base_lrs": [0.1], "last_epoch": 0, "last_lr": [0.1]}), ValueError,
     r"StepLR.load_state_dict: step_size must be an int >= 1; got 0"),
    (lambda: StepLR(plain_optimizer(), 2).load_state_dict(
        {"step_size": 2, "gamma": 0.1, "base_lrs": [0.1, 0.1], "last_epoch": 0, "last_lr": [0.1]}), ValueError,
     r"StepLR.load_state_dict: base_lrs must be a list of 1 learning rates"),
    (lambda: ReduceLROnPlateau(plain_optimizer()).load_state_dict({**ReduceLROnPlateau(plain_optimizer()).state_dict(),
                                                                  "best": float("nan")}), ValueError,
     r"ReduceLROnPlateau.load_state_dict: best must be a finite float; got nan"),
], ids=lambda value: None if callable(value) or isinstance(value, type) else value[:40])
def test_scheduler_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_public_names():
    import fastcnn.optim as optim

    assert set(optim.__all__) == {"Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"}
    assert optim.lr_scheduler is lr_scheduler and issubclass(ReduceLROnPlateau, LRScheduler)
    assert all(issubclass(cls, Optimizer) for cls in (SGD, Adam, AdamW))
