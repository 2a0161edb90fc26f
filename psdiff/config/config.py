"""fvcore's CfgNode with errors a user can act on: one line naming the key, the file, a fix.

yacs reports an unknown key as a bare `KeyError` from deep inside the merge; here the YAML file
or command-line list is checked first, and the closest valid key is suggested.
"""

import difflib
import os

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from psdiff.utils.errors import PsdiffError


def _flat_keys(node, prefix=""):
    """All full key names ("SOLVER.BASE_LR") of a nested mapping."""
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys.extend(_flat_keys(value, full + ".") if isinstance(value, dict) else [full])
    return keys


def _closest(key, valid):
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return match[0] if match else None


def _unknown_key_error(key, valid, where):
    return PsdiffError(
        f"unknown config key '{key}' in {where}; did you mean '{_closest(key, valid)}'?"
    )


def _yaml_problem(error: Exception) -> str:
    """A YAML parser error in one line that keeps where it is: "FILE line L, column C: what"."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"{mark.name} line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _as_float_if_int(default, value):
    """`1` where the default is a float means 1.0 (yacs would reject the int's type)."""
    if isinstance(default, float) and not isinstance(default, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return float(value)
    return value


class CfgNode(_FvcoreCfgNode):
    """A config tree; merging a YAML file or a KEY VALUE list rejects unknown keys clearly."""

    def _check_keys(self, loaded, where):
        valid = _flat_keys(self)
        for key in _flat_keys(loaded):
            if key not in valid and not self._is_new_allowed(key):
                raise _unknown_key_error(key, valid, where)

    def _lookup(self, key):
        node = self
        for part in key.split("."):
            node = node[part]
        return node

    def _coerce_ints(self, loaded, prefix=""):
        """Turn ints given for float keys into floats, in place (keys already checked)."""
        for name, value in loaded.items():
            full = prefix + name
            if isinstance(value, dict):
                self._coerce_ints(value, full + ".")
            elif not self._is_new_allowed(full):
                loaded[name] = _as_float_if_int(self._lookup(full), value)

    def _is_new_allowed(self, key):
        node = self
        for part in key.split(".")[:-1]:
            if part not in node or not isinstance(node[part], dict):
                return False
            node = node[part]
        return node.is_new_allowed()

    def merge_from_file(self, cfg_filename, allow_unsafe=False):
        """Merge a YAML file (with `_BASE_` inheritance); unknown keys name the file."""
        if not os.path.isfile(cfg_filename):
            raise PsdiffError(f"config file not found: {cfg_filename}")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except (yaml.YAMLError, OSError) as e:
            raise PsdiffError(f"cannot read config file {cfg_filename}: {_yaml_problem(e)}")
        loaded = type(self)(loaded)
        self._check_keys(loaded, cfg_filename)
        self._coerce_ints(loaded)
        self._merge_checked(loaded, cfg_filename)

    def merge_from_dump(self, text: str, where: str):
        """Merge a config dumped by `cfg.dump()` (e.g. the one a predictions file keeps);
        unknown keys and bad values name `where`."""
        try:
            loaded = type(self)(yaml.safe_load(text) or {})
        except yaml.YAMLError as e:
            raise PsdiffError(f"cannot read {where}: {e}".splitlines()[0])
        self._check_keys(loaded, where)
        self._coerce_ints(loaded)
        self._merge_checked(loaded, where)

    def merge_from_list(self, cfg_list):
        """Merge `KEY VALUE` pairs from the command line; unknown keys say so in one line."""
        if len(cfg_list) % 2:
            raise PsdiffError(f"config overrides must be KEY VALUE pairs, got: {list(cfg_list)}")
        valid = _flat_keys(self)
        for key in cfg_list[0::2]:
            if key not in valid and not self._is_new_allowed(key):
                raise _unknown_key_error(key, valid, "the command-line overrides")
        cfg_list = list(cfg_list)
        for i in range(0, len(cfg_list), 2):
            if cfg_list[i] in valid:
                cfg_list[i + 1] = _as_float_if_int(self._lookup(cfg_list[i]), cfg_list[i + 1])
        try:
            super().merge_from_list(cfg_list)
        except (ValueError, AssertionError, KeyError) as e:
            raise PsdiffError(f"bad command-line override: {e}".splitlines()[0])

    def _merge_checked(self, loaded, where):
        try:
            self.merge_from_other_cfg(loaded)
        except (ValueError, AssertionError, KeyError) as e:
            raise PsdiffError(f"bad value in {where}: {e}".splitlines()[0])
