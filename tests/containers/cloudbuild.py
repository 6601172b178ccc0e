"""Reading cloudbuild.yaml the way Cloud Build does (steps, waitFor, ``$VAR`` / ``${VAR}`` substitutions);
the gcloud command lines of the deploy docs; and the installed gcloud, run offline."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT, free_port

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


def script(step: Mapping[str, Any], values: Mapping[str, str]) -> str | None:
    """The bash script of a ``bash -c SCRIPT`` step (cloudbuild.yaml's optional plotter steps), substituted
    as Cloud Build does; None for any other step."""
    args = [str(arg) for arg in step.get("args", [])]
    if step.get("entrypoint") != "bash" or len(args) != 2 or args[0] != "-c":
        return None
    return substitute(args[1], values)


def script_commands(step: Mapping[str, Any], values: Mapping[str, str], program: str = "gcloud") -> list[list[str]]:
    """The ``program`` command lines of a bash step's script (continuations joined), as bash splits them
    (args after ``program``). The scripts use substitutions only, no shell variables, so this is exact."""
    text = script(step, values)
    if text is None:
        return []
    lines = (line.strip() for line in text.replace("\\\n", " ").splitlines())
    return [shlex.split(line)[1:] for line in lines if line.startswith(f"{program} ")]


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


# --- the deploy docs' shell blocks

DOCS = (ROOT / "docs" / "deploy.md", ROOT / "README.md")
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.DOTALL)
ASSIGNMENT = re.compile(r"^(?:export )?[A-Z][A-Z0-9_]*=")


def documented_commands() -> tuple[str, list[str]]:
    """Variable assignments and gcloud command lines from the shell blocks of the deploy docs."""
    assignments: list[str] = []
    commands: list[str] = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        for block in SHELL_BLOCK.findall(doc.read_text()):
            for raw in block.replace("\\\n", " ").splitlines():
                line = raw.strip()
                if ASSIGNMENT.match(line):
                    assignments.append(line)
                elif line.startswith("gcloud ") and not line.startswith("gcloud auth login"):
                    commands.append(line)
    return "\n".join(dict.fromkeys(assignments)), list(dict.fromkeys(commands))


def doc_section(doc: Path, heading: str) -> str:
    """The Markdown section of ``doc`` that starts at ``heading``, up to the next ``## `` heading."""
    text = doc.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else None]


def section_commands(section: str) -> tuple[str, list[str]]:
    """The deploy docs' variable assignments (``documented_commands``), the section's own, and the section's
    gcloud lines, without their trailing ``  # comments``."""
    preamble, _ = documented_commands()
    commands: list[str] = []
    for block in SHELL_BLOCK.findall(section):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split("  #")[0].strip()
            if ASSIGNMENT.match(line):
                preamble += "\n" + line
            elif line.startswith("gcloud "):
                commands.append(line)
    return preamble, commands


def sample_preamble(preamble: str) -> str:
    """The docs' own variables; those computed by a command (`git rev-parse`, ...) get a sample value."""
    return "\n".join(
        f"{line.split('=', 1)[0]}=example-value" if "$(" in line else line for line in preamble.splitlines()
    )


# --- the installed gcloud, offline

NO_ACCOUNT = "You do not currently have an active account selected"


def gcloud_environment(home: Path) -> dict[str, str]:
    """An empty gcloud configuration under ``home`` that has no account and cannot reach any network."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens here: any request fails at once, locally
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": str(home / "config"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "GCE_METADATA_HOST": closed.removeprefix("http://"),
        "GCE_METADATA_IP": closed.removeprefix("http://"),
        "HTTPS_PROXY": closed,
        "HTTP_PROXY": closed,
        "https_proxy": closed,
        "http_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def offline_gcloud(executable: str, home: Path) -> tuple[str, dict[str, str], Path]:
    """(gcloud, its environment, a tiny source folder holding cloudbuild.yaml to run it in)."""
    workdir = home / "source"  # `gcloud builds submit` runs here: a tiny source, never the repository
    workdir.mkdir(exist_ok=True)
    shutil.copy(CLOUDBUILD, workdir / "cloudbuild.yaml")
    return executable, gcloud_environment(home), workdir


def run_gcloud(gcloud: tuple[str, dict[str, str], Path], command: str, preamble: str = "") -> tuple[int, str]:
    """Run one gcloud command line through bash (so docs' $VARIABLES expand, and `set -u` catches unset ones)."""
    executable, env, workdir = gcloud
    script = f'set -euo pipefail\n{preamble}\ngcloud() {{ {executable} "$@"; }}\n{command}\n'
    result = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode, result.stdout + result.stderr


def rejected(results: Mapping[str, tuple[int, str]]) -> dict[str, str]:
    """The commands gcloud refused: neither finished (local commands) nor stopped for want of an account."""
    return {cmd: out for cmd, (code, out) in results.items() if code != 0 and NO_ACCOUNT not in out}
