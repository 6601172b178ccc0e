"""Reading cloudbuild.yaml the way Cloud Build does: steps, waitFor, and ``$VAR`` / ``${VAR}`` substitutions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from tests.support import ROOT

CLOUDBUILD = ROOT / "cloudbuild.yaml"
# Cloud Build's own substitutions (https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values)
BUILTINS = frozenset(
    {
        "PROJECT_ID",
        "PROJECT_NUMBER",
        "BUILD_ID",
        "LOCATION",
        "COMMIT_SHA",
        "SHORT_SHA",
        "REVISION_ID",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "TRIGGER_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
    }
)
# What a build would get from `gcloud builds submit --project=example-project --substitutions=COMMIT_SHA=...`
SAMPLE_BUILTINS = {
    "PROJECT_ID": "example-project",
    "COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "SHORT_SHA": "0123456",
}
# `$$` is a literal dollar; `$NAME` and `${NAME}` are substitutions.
_SUBSTITUTION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CLOUDBUILD.read_text())
    return config


def steps(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The steps by id (every step must have one: waitFor refers to them)."""
    by_id: dict[str, dict[str, Any]] = {}
    for step in config["steps"]:
        assert "id" in step, f"a step without an id: {step}"
        assert step["id"] not in by_id, f"two steps named {step['id']}"
        by_id[step["id"]] = step
    return by_id


def used_substitutions(value: object) -> set[str]:
    """Every substitution name referenced anywhere in ``value`` (nested lists, dicts, strings)."""
    if isinstance(value, str):
        return {m.group(1) or m.group(2) for m in _SUBSTITUTION.finditer(value) if m.group(0) != "$$"}
    if isinstance(value, Mapping):
        return set().union(*(used_substitutions(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(used_substitutions(v) for v in value), set())
    return set()


def substitution_values(config: Mapping[str, Any], **overrides: str) -> dict[str, str]:
    return {**SAMPLE_BUILTINS, **{k: str(v) for k, v in config.get("substitutions", {}).items()}, **overrides}


def substitute(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values[match.group(1) or match.group(2)]

    return _SUBSTITUTION.sub(replace, text)


def step_args(step: Mapping[str, Any], values: Mapping[str, str]) -> list[str]:
    return [substitute(str(arg), values) for arg in step.get("args", [])]


def flag_values(args: list[str], flag: str) -> list[str]:
    """The values of ``--flag=value`` arguments (every occurrence)."""
    prefix = f"{flag}="
    return [arg[len(prefix) :] for arg in args if arg.startswith(prefix)]


def flag_value(args: list[str], flag: str) -> str:
    values = flag_values(args, flag)
    assert len(values) == 1, f"expected exactly one {flag}=... in {args}"
    return values[0]


def key_values(text: str) -> dict[str, str]:
    """``A=1,B=2`` (gcloud's --set-env-vars and probe settings) as a dict."""
    return dict(item.split("=", 1) for item in text.split(","))


def dependencies(by_id: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """For each step, every step that must finish before it starts (transitively).

    Cloud Build: no ``waitFor`` means "after every earlier step"; ``waitFor: ['-']`` means "at once".
    """
    order = list(by_id)
    direct: dict[str, set[str]] = {}
    for index, step_id in enumerate(order):
        wait = by_id[step_id].get("waitFor")
        if wait is None:
            direct[step_id] = set(order[:index])
        elif wait == ["-"]:
            direct[step_id] = set()
        else:
            unknown = set(wait) - set(order[:index])
            assert not unknown, f"{step_id} waits for steps that are not defined before it: {unknown}"
            direct[step_id] = set(wait)
    closure: dict[str, set[str]] = {}
    for step_id in order:
        before = set(direct[step_id])
        for dep in direct[step_id]:
            before |= closure[dep]
        closure[step_id] = before
    return closure
