"""`Optimizer`, the base class of fastcnn's optimizers: parameter groups, per-parameter state, `zero_grad`, `step`,
and checkpoints (`state_dict` / `load_state_dict`). The update rules (SGD, Adam, AdamW) are in `fastcnn.optim`,
which re-exports this class.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..nn.parameter import Parameter
from ._checks import _check_float, _check_int, _describe


def _as_group_list(params, owner: str) -> list[dict]:
    """`params` as a list of group dicts: an iterable of Parameters is one group, an iterable of dicts is many."""
    if isinstance(params, (Parameter, np.ndarray, Mapping, str)):
        raise TypeError(
            f"{owner}: params must be an iterable of Parameters or of dicts (parameter groups); got "
            f"{type(params).__name__} (wrap a single one in a list)"
        )
    if isinstance(params, (set, frozenset)):
        # state_dict() numbers parameters by position; a set's order changes between runs.
        raise TypeError(
            f"{owner}: params must be an ordered iterable (a list, a generator); got a {type(params).__name__}"
        )
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"{owner}: params must be an iterable of Parameters or of dicts (parameter groups); got {_describe(params)}"
        ) from None
    if not items:
        raise ValueError(
            f"{owner}: params must not be empty; got an empty parameter list "
            "(a generator such as model.parameters() can be consumed only once)"
        )
    dicts = [isinstance(item, Mapping) for item in items]
    if all(dicts):
        return [dict(item) for item in items]
    if any(dicts):
        raise TypeError(f"{owner}: params must hold only Parameters or only dicts (parameter groups); got a mix")
    return [{"params": items}]


def _group_params(group: dict, where: str, owner: str) -> list[Parameter]:
    if "params" not in group:
        raise ValueError(f"{owner}: a parameter group must have a 'params' key; got keys {sorted(map(str, group))}{where}")
    params = group["params"]
    if isinstance(params, Parameter):
        return [params]
    if isinstance(params, (set, frozenset, Mapping, str, np.ndarray)):
        raise TypeError(f"{owner}: 'params' must be a Parameter or an ordered iterable of Parameters; got "
                        f"{type(params).__name__}{where}")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: 'params' must be a Parameter or an iterable of Parameters; got "
                        f"{_describe(params)}{where}") from None
    if not params:
        raise ValueError(f"{owner}: params must not be empty; got a parameter group with no parameters{where}")
    for position, param in enumerate(params):
        if not isinstance(param, Parameter):
            raise TypeError(f"{owner}: params must contain only fastcnn Parameters; got {type(param).__name__} at "
                            f"position {position}{where}")
    return params


class Optimizer:
    """Base class of the optimizers: parameter groups, state, `zero_grad`, `state_dict` and `load_state_dict`.

    A subclass passes its validated `defaults` (hyper-parameter name -> value), implements `_check_group` (which
    validates and normalises one group's hyper-parameters), `_state_names` (the buffers a parameter's state holds
    once it has stepped) and `_update` (one parameter's in-place update).

    Args:
        params: an iterable of Parameters, or of dicts (parameter groups) such as
            `{"params": [...], "lr": 0.01}` whose other keys override `defaults` for that group.
        defaults: the hyper-parameters of every group that does not override them.
    """

    # Keys a group may hold besides its hyper-parameters: schedulers record the learning rate they started from.
    _EXTRA_GROUP_KEYS = ("initial_lr",)

    def __init__(self, params, defaults: dict):
        owner = type(self).__name__
        self.defaults = self._check_group(dict(defaults), owner, "")
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict] = {}
        # Two rows of float32 scratch, as long as the largest parameter: the update's temporaries are views into it,
        # so a step allocates nothing.
        self._scratch = np.empty((2, 0), dtype=np.float32)
        for group in _as_group_list(params, owner):
            self.add_param_group(group)

    # -- subclass interface ------------------------------------------------------------------------------------

    # Every buffer a parameter's state may hold, in the order the optimizer creates them.
    _STATE_NAMES: tuple[str, ...] = ()

    def _check_group(self, group: dict, owner: str, where: str) -> dict:
        """The group's hyper-parameters, validated and normalised (Python floats, tuples)."""
        raise NotImplementedError

    def _state_names(self, group: dict) -> tuple[str, ...]:
        """The buffers a parameter's state must hold, once it has any, under the group's hyper-parameters."""
        raise NotImplementedError

    def _checked_group(self, group: dict, owner: str, where: str) -> dict:
        checked = self._check_group(group, owner, where)
        if "initial_lr" in group:
            try:
                checked["initial_lr"] = _check_float(group["initial_lr"], "initial_lr", owner)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{error}{where}") from None
        return checked

    def _update(self, param: Parameter, group: dict, state: dict, scratch_a: np.ndarray, scratch_b: np.ndarray):
        raise NotImplementedError

    # -- groups ------------------------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters, e.g. layers unfrozen while fine-tuning; missing hyper-parameters take the
        optimizer's defaults.

        Args:
            param_group: a dict with a "params" key (a Parameter or an iterable of them) and optional
                hyper-parameter overrides.
        """
        owner = f"{type(self).__name__}"
        where = f" (in param_groups[{len(self.param_groups)}])"
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{owner}: a parameter group must be a dict; got {_describe(param_group)}")
        params = _group_params(dict(param_group), where, owner)
        self._check_no_duplicates(params, owner, where)
        unknown = set(param_group) - {"params"} - set(self.defaults) - set(self._EXTRA_GROUP_KEYS)
        if unknown:
            raise ValueError(f"{owner}: unknown hyper-parameter(s) {sorted(unknown)}{where}; expected some of "
                             f"{sorted(self.defaults)}")
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self.param_groups.append({"params": params, **self._checked_group(merged, owner, where)})
        largest = max(param.data.size for param in params)
        if largest > self._scratch.shape[1]:
            self._scratch = np.empty((2, largest), dtype=np.float32)

    def _check_no_duplicates(self, params: list[Parameter], owner: str, where: str) -> None:
        # A parameter listed twice would be updated twice per step, and its state would be ambiguous.
        earlier = {param: (g, i) for g, group in enumerate(self.param_groups)
                   for i, param in enumerate(group["params"])}
        here: dict[Parameter, int] = {}
        for position, param in enumerate(params):
            if param in earlier:
                g, i = earlier[param]
                raise ValueError(f"{owner}: a parameter must appear only once; got {param!r} at position {position}"
                                 f"{where}, already at position {i} of param_groups[{g}]")
            if param in here:
                raise ValueError(f"{owner}: a parameter must appear only once; got {param!r} at positions "
                                 f"{here[param]} and {position}{where}")
            here[param] = position

    # -- training ----------------------------------------------------------------------------------------------

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero, in place (frozen ones included: it costs nothing to them)."""
        for group in self.param_groups:
            for param in group["params"]:
                param.zero_grad()

    def step(self, closure=None):
        """Update every trainable parameter's `data` in place from its `grad`.

        Args:
            closure: an optional callable that recomputes the loss (and the gradients) and returns the loss, as
                in PyTorch. Default: None.

        Returns:
            the closure's loss, or None.
        """
        loss = None if closure is None else closure()
        owner = f"{type(self).__name__}.step"
        for group in self.param_groups:
            # Schedulers and users set group["lr"] between steps: check it here, where a bad one would do harm.
            group["lr"] = _check_float(group["lr"], "lr", owner)
            for param in group["params"]:
                if not param.requires_grad:
                    continue
                size = param.data.size
                scratch_a = self._scratch[0, :size].reshape(param.data.shape)
                scratch_b = self._scratch[1, :size].reshape(param.data.shape)
                self._update(param, group, self.state.setdefault(param, {}), scratch_a, scratch_b)
        return loss

    # -- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The optimizer's state as NumPy arrays and JSON-able values, copied (later steps do not change it).

        Parameters are numbered by their position across `param_groups`. The keys are:

        - "param_groups": a list of dicts, one per group, with its hyper-parameters and "params", the numbers of
          its parameters (JSON-able);
        - "state.<number>.<name>": a parameter's buffer (a float32 array) or step count (an int).

        Example:
            >>> state = optimizer.state_dict()
            >>> arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
            >>> np.savez("optimizer.npz", **arrays)
            >>> json.dump({k: v for k, v in state.items() if k not in arrays}, open("optimizer.json", "w"))
        """
        result: dict = {"param_groups": []}
        number = 0
        for group in self.param_groups:
            saved = {key: list(value) if isinstance(value, tuple) else value
                     for key, value in group.items() if key != "params"}
            saved["params"] = list(range(number, number + len(group["params"])))
            result["param_groups"].append(saved)
            for param in group["params"]:
                for name, value in self.state.get(param, {}).items():
                    result[f"state.{number}.{name}"] = value.copy() if isinstance(value, np.ndarray) else value
                number += 1
        return result

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the hyper-parameters and buffers saved by `state_dict()`, so training continues exactly.

        The checkpoint must come from an optimizer of the same kind over parameters of the same shapes, in the same
        groups. Nothing changes unless the whole checkpoint is valid.

        Args:
            state_dict: a dict as `state_dict()` returns it (tuples may come back as lists from JSON).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: state_dict must be a dict; got {_describe(state_dict)}")
        if "param_groups" not in state_dict:
            raise ValueError(f"{owner}: missing key 'param_groups'; got keys {sorted(map(str, state_dict))[:10]}")
        groups, number_to_param = self._load_groups(state_dict["param_groups"], owner)
        buffers: dict[int, dict] = {}
        for key, value in state_dict.items():
            if key == "param_groups":
                continue
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
                raise ValueError(f"{owner}: unexpected key {key!r}; expected 'param_groups' and "
                                 "'state.<parameter number>.<name>'")
            if int(parts[1]) not in number_to_param:
                raise ValueError(f"{owner}: unexpected key {key!r}: the optimizer has parameters 0 to "
                                 f"{len(number_to_param) - 1}")
            buffers.setdefault(int(parts[1]), {})[parts[2]] = value
        state = {}
        for number, entries in buffers.items():
            param, group = number_to_param[number]
            state[param] = self._load_param_state(entries, param, group, f"state.{number}", owner)
        for current, loaded in zip(self.param_groups, groups):
            params = current["params"]
            current.clear()
            current.update({"params": params, **loaded})
        self.state = state

    def _load_groups(self, saved_groups, owner: str):
        """Validated hyper-parameters per group, and parameter number -> (Parameter, group) from the checkpoint."""
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            count = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else _describe(saved_groups)
            raise ValueError(f"{owner}: param_groups must be a list of {len(self.param_groups)} groups, one per "
                             f"group of the optimizer; got {count}")
        groups, number_to_param = [], {}
        for g, (saved, current) in enumerate(zip(saved_groups, self.param_groups)):
            where = f" (in the checkpoint's param_groups[{g}])"
            if not isinstance(saved, Mapping):
                raise TypeError(f"{owner}: a parameter group must be a dict; got {_describe(saved)}{where}")
            numbers = saved.get("params")
            if not isinstance(numbers, (list, tuple)) or len(numbers) != len(current["params"]):
                count = len(numbers) if isinstance(numbers, (list, tuple)) else repr(numbers)
                raise ValueError(f"{owner}: the optimizer's param_groups[{g}] has {len(current['params'])} "
                                 f"parameters; the checkpoint's has {count}")
            hyper = {key: value for key, value in saved.items() if key != "params"}
            missing = set(self.defaults) - set(hyper)
            unknown = set(hyper) - set(self.defaults) - set(self._EXTRA_GROUP_KEYS)
            if missing or unknown:
                raise ValueError(f"{owner}: hyper-parameters do not match{where}: missing {sorted(missing)}, "
                                 f"unexpected {sorted(unknown)}")
            checked = self._checked_group(hyper, owner, where)
            for number, param in zip(numbers, current["params"]):
                number = _check_int(number, "a parameter number", owner, minimum=0)
                if number in number_to_param:
                    raise ValueError(f"{owner}: parameter number {number} appears twice in param_groups")
                number_to_param[number] = (param, checked)
            groups.append(checked)
        return groups, number_to_param

    def _load_param_state(self, entries: dict, param: Parameter, group: dict, prefix: str, owner: str) -> dict:
        required = self._state_names(group)
        if not set(required) <= set(entries) <= set(self._STATE_NAMES):
            raise ValueError(f"{owner}: {prefix} must hold {list(required)} (for these hyper-parameters), and "
                             f"nothing but {list(self._STATE_NAMES)}; got {sorted(entries)}")
        state = {}
        for name in (name for name in self._STATE_NAMES if name in entries):  # the order state_dict() writes
            value = entries[name]
            if name == "step":
                state[name] = _check_int(value, f"{prefix}.step", owner, minimum=1)
                continue
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise TypeError(f"{owner}: {prefix}.{name} must be a floating NumPy array; got {_describe(value)}")
            if value.shape != param.data.shape:
                raise ValueError(f"{owner}: size mismatch for {prefix}.{name}: checkpoint has {value.shape}, "
                                 f"parameter has {param.data.shape}")
            state[name] = np.array(value, dtype=np.float32, order="C", copy=True)
        return state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines.extend(f"    {key}: {value}" for key, value in group.items() if key != "params")
        return "\n".join(lines + [")"])
