"""Cloud Run's documented limits, as checks on the arguments of a ``gcloud run deploy`` (or any gcloud
command that grants a ``--role``). gcloud parses these flags offline but only the server validates most
values: ``--cpu=3 --memory=2GB --timeout=7200 --concurrency=5000``, ``periodSeconds=abc`` or a misspelt
role all pass ``gcloud``'s own parser and fail (or silently misbehave) only at deploy time.

Sources, read when these checks were written (each check below names its own):

- CPU: https://cloud.google.com/run/docs/configuring/services/cpu ("CPU and memory table": .08 vCPU up to
  512 MiB, .5 up to 1 GiB, 1 up to 4 GiB, 2 up to 8 GiB, 4: 2 to 16 GiB, 6: 4 to 24 GiB, 8: 4 to 32 GiB;
  below 1 CPU any value from 0.08 in steps of 0.001, values above 1 integers; below 1 CPU concurrency must
  be 1, billing request-based (CPU throttled) and the execution environment first generation).
- Memory: https://cloud.google.com/run/docs/configuring/services/memory-limits (at most 32 GiB; at least
  512 MiB on the second generation, 128 MiB on the first; more than 4/8/16/24 GiB needs 2/4/6/8 CPUs).
- Concurrency: https://cloud.google.com/run/docs/about-concurrency (a maximum of 1,000 per instance).
- Request timeout: https://cloud.google.com/run/docs/configuring/request-timeout (services: up to 60
  minutes, 3600 s).
- Probes: https://cloud.google.com/run/docs/configuring/healthchecks and the Admin API's Probe message,
  https://cloud.google.com/run/docs/reference/rest/v2/Container#Probe (initialDelaySeconds 0..240 for a
  startup probe, 0..3600 for liveness; periodSeconds 1..240 / 1..3600 and at least timeoutSeconds;
  timeoutSeconds 1..3600 and no more than periodSeconds; failureThreshold at least 1; a startup probe
  must succeed within failureThreshold x periodSeconds, which cannot exceed 240 s).
- Instances: https://cloud.google.com/run/docs/configuring/max-instances and .../min-instances (whole
  numbers; minimum no more than maximum), https://cloud.google.com/run/quotas (1,000 instances per
  revision is the usual ceiling for 1 vCPU / 1 GiB; larger instances get fewer).
- Roles: https://cloud.google.com/iam/docs/roles-permissions (the index of predefined roles); each role
  in ``PREDEFINED_ROLES`` links its own page.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Predefined roles this project's commands may grant, each with the page that defines it. A role missing
# here is a typo or a role nobody has checked: add it with its page after reading that page.
PREDEFINED_ROLES: Mapping[str, str] = {
    "roles/run.admin": "https://cloud.google.com/iam/docs/roles-permissions/run#run.admin",
    "roles/run.developer": "https://cloud.google.com/iam/docs/roles-permissions/run#run.developer",
    "roles/run.invoker": "https://cloud.google.com/iam/docs/roles-permissions/run#run.invoker",
    "roles/run.viewer": "https://cloud.google.com/iam/docs/roles-permissions/run#run.viewer",
    "roles/iam.serviceAccountUser": "https://cloud.google.com/iam/docs/roles-permissions/iam#iam.serviceAccountUser",
    "roles/logging.logWriter": "https://cloud.google.com/iam/docs/roles-permissions/logging#logging.logWriter",
    "roles/logging.viewer": "https://cloud.google.com/iam/docs/roles-permissions/logging#logging.viewer",
    "roles/monitoring.metricWriter": (
        "https://cloud.google.com/iam/docs/roles-permissions/monitoring#monitoring.metricWriter"
    ),
    "roles/artifactregistry.reader": (
        "https://cloud.google.com/iam/docs/roles-permissions/artifactregistry#artifactregistry.reader"
    ),
    "roles/artifactregistry.writer": (
        "https://cloud.google.com/iam/docs/roles-permissions/artifactregistry#artifactregistry.writer"
    ),
    "roles/secretmanager.secretAccessor": (
        "https://cloud.google.com/iam/docs/roles-permissions/secretmanager#secretmanager.secretAccessor"
    ),
    "roles/storage.objectViewer": "https://cloud.google.com/iam/docs/roles-permissions/storage#storage.objectViewer",
    "roles/storage.objectUser": "https://cloud.google.com/iam/docs/roles-permissions/storage#storage.objectUser",
    "roles/storage.legacyBucketWriter": (
        "https://cloud.google.com/iam/docs/roles-permissions/storage#storage.legacyBucketWriter"
    ),
    "roles/cloudbuild.builds.editor": (
        "https://cloud.google.com/iam/docs/roles-permissions/cloudbuild#cloudbuild.builds.editor"
    ),
    "roles/serviceusage.serviceUsageConsumer": (
        "https://cloud.google.com/iam/docs/roles-permissions/serviceusage#serviceusage.serviceUsageConsumer"
    ),
}

MiB = 1024**2
GiB = 1024**3
WHOLE_CPUS = (1, 2, 4, 6, 8)
# (CPUs, least memory, most memory) from the CPU page's table, for whole CPUs
CPU_MEMORY = {1: (0, 4 * GiB), 2: (0, 8 * GiB), 4: (2 * GiB, 16 * GiB), 6: (4 * GiB, 24 * GiB), 8: (4 * GiB, 32 * GiB)}
MAX_CONCURRENCY = 1000
MAX_SERVICE_TIMEOUT_S = 3600
MAX_INSTANCES = 1000
STARTUP_MAX_S = 240
LIVENESS_MAX_S = 3600
PROBE_NUMBERS = ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "failureThreshold")
PROBE_KEYS = {
    # the keys gcloud documents for each flag (`gcloud run deploy --help`)
    "--startup-probe": {*PROBE_NUMBERS, "httpGet.port", "httpGet.path", "grpc.port", "grpc.service", "tcpSocket.port"},
    "--liveness-probe": {*PROBE_NUMBERS, "httpGet.port", "httpGet.path", "grpc.port", "grpc.service"},
}
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "timeoutSeconds": 1, "periodSeconds": 10, "failureThreshold": 3}
_MEMORY = re.compile(r"^(?P<number>[1-9][0-9]*)(?P<unit>Mi|Gi)$")
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def flag_values(args: Sequence[str], flag: str) -> list[str]:
    """Every value of ``flag`` in gcloud's two spellings, ``--flag=value`` and ``--flag value``."""
    values = []
    for index, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            values.append(arg[len(flag) + 1 :])
        elif arg == flag and index + 1 < len(args):
            values.append(args[index + 1])
    return values


def last_value(args: Sequence[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    return values[-1] if values else None


def memory_bytes(value: str) -> int | None:
    match = _MEMORY.match(value)
    if not match:
        return None
    return int(match["number"]) * (MiB if match["unit"] == "Mi" else GiB)


def cpu_value(value: str) -> Decimal | None:
    """--cpu as a number of vCPUs (Kubernetes units: "2", "0.5", "500m"), or None if it is not a number."""
    try:
        number = Decimal(value[:-1]) / 1000 if value.endswith("m") else Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def duration_seconds(value: str) -> int | None:
    """gcloud's --timeout: whole seconds ("300") or a duration ("5m", "1h", "10m5s")."""
    if value.isdigit():
        return int(value)
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        return None
    return int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)


def _whole(value: str, name: str, low: int, high: int | None, problems: list[str]) -> int | None:
    if not re.fullmatch(r"[0-9]+", value):
        problems.append(f"{name}={value!r} is not a whole number")
        return None
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f"at least {low}"
        problems.append(f"{name}={number} is out of range ({bound})")
    return number


def check_probe(flag: str, value: str, container_port: str | None) -> list[str]:
    """A --startup-probe or --liveness-probe value against the health-check page's ranges."""
    problems: list[str] = []
    if value == "":
        return problems  # removes the probe
    settings: dict[str, str] = {}
    for item in value.split(","):
        key, sep, setting = item.partition("=")
        if not sep:
            problems.append(f"{flag}: {item!r} is not KEY=VALUE")
            continue
        if key not in PROBE_KEYS[flag]:
            problems.append(f"{flag}: unknown key {key!r} (gcloud knows {', '.join(sorted(PROBE_KEYS[flag]))})")
        settings[key] = setting
    startup = flag == "--startup-probe"
    limit = STARTUP_MAX_S if startup else LIVENESS_MAX_S
    numbers = dict(PROBE_DEFAULTS)
    for key, low, high in (
        ("initialDelaySeconds", 0, limit),
        ("periodSeconds", 1, limit),
        ("timeoutSeconds", 1, limit),
        ("failureThreshold", 1, None),
    ):
        if key in settings:
            number = _whole(settings[key], f"{flag} {key}", low, high, problems)
            if number is not None:
                numbers[key] = number
    if numbers["timeoutSeconds"] > numbers["periodSeconds"]:
        problems.append(
            f"{flag}: timeoutSeconds={numbers['timeoutSeconds']} exceeds periodSeconds={numbers['periodSeconds']}"
        )
    if startup and numbers["failureThreshold"] * numbers["periodSeconds"] > STARTUP_MAX_S:
        problems.append(
            f"{flag}: failureThreshold x periodSeconds = {numbers['failureThreshold'] * numbers['periodSeconds']} s "
            f"exceeds the {STARTUP_MAX_S} s a startup probe may take"
        )
    actions = {key.split(".", 1)[0] for key in settings if "." in key}
    if len(actions) > 1:
        problems.append(f"{flag}: more than one of httpGet, grpc, tcpSocket: {sorted(actions)}")
    path = settings.get("httpGet.path")
    if path is not None and not path.startswith("/"):
        problems.append(f"{flag}: httpGet.path={path!r} must start with /")
    for key in ("httpGet.port", "grpc.port", "tcpSocket.port"):
        if key in settings:
            port = _whole(settings[key], f"{flag} {key}", 1, 65535, problems)
            if port is not None and container_port is not None and str(port) != container_port:
                problems.append(f"{flag}: {key}={port} is not the container port --port={container_port}")
    return problems


def split_containers(args: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """A ``gcloud run deploy``'s arguments as gcloud reads them (``gcloud run deploy --help``: "Flags
    following --container will apply to the specified container"): those before the first ``--container``,
    and each container's own, by name. No ``--container``: everything is in the first list."""
    service: list[str] = []
    named: dict[str, list[str]] = {}
    current = service
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--container" and index + 1 < len(args):
            current = named.setdefault(args[index + 1], [])
            index += 2
            continue
        if arg.startswith("--container="):
            current = named.setdefault(arg.removeprefix("--container="), [])
        else:
            current.append(arg)
        index += 1
    return service, named


def ingress_args(args: Sequence[str]) -> list[str]:
    """The service's arguments followed by its ingress container's (the one container with ``--port``):
    what a single-container deploy says in one list. A deploy without ``--container`` is returned as is."""
    service, named = split_containers(args)
    if not named:
        return list(args)
    ingress = [own for own in named.values() if flag_values(own, "--port")]
    assert len(ingress) == 1, f"expected one container with --port (the ingress) among {sorted(named)}"
    return [*service, *ingress[0]]


def check_sidecar(args: Sequence[str]) -> list[str]:
    """A sidecar container's own flags: its CPU is one of the per-container values ``gcloud run deploy
    --help`` lists (fractional values below 1, then whole CPUs), its memory in Mi/Gi within what that CPU
    allows, its probes well-formed (on its own port: no container port to match)."""
    problems: list[str] = []
    cpu_text = last_value(args, "--cpu")
    cpu = None if cpu_text is None else cpu_value(cpu_text)
    if cpu_text is not None and cpu is None:
        problems.append(f"--cpu={cpu_text!r} is not a number of vCPUs")
    elif cpu is not None and not (Decimal("0.08") <= cpu < 1 or cpu in WHOLE_CPUS):
        problems.append(f"--cpu={cpu_text}: a container takes 0.08 to 1 or {', '.join(map(str, WHOLE_CPUS))} CPUs")
    memory_text = last_value(args, "--memory")
    if memory_text is not None:
        memory = memory_bytes(memory_text)
        if memory is None:
            problems.append(f"--memory={memory_text!r}: write it in Mi or Gi (e.g. 512Mi, 2Gi)")
        elif cpu is not None and cpu < 1 and memory > (512 * MiB if cpu < Decimal("0.5") else GiB):
            problems.append(f"--cpu={cpu_text} allows at most {512 if cpu < Decimal('0.5') else 1024} MiB")
    if last_value(args, "--port") is not None:
        problems.append("--port: only the ingress container receives requests")
    for flag in PROBE_KEYS:
        for value in flag_values(args, flag):
            problems.extend(check_probe(flag, value, None))
    return problems


def check_deploy(args: Sequence[str]) -> list[str]:
    """Problems with the values of a ``gcloud run deploy`` (args after ``gcloud``), by Cloud Run's limits.

    With several containers (``--container``), the instance's rules are checked on the service's flags with
    the ingress container's (as for one container), each sidecar's own size and probes per container, and
    every ``--depends-on`` must name a container of the deploy. What several containers add up to is not
    checked: the pages cited above give no rule for the sum.
    """
    service, named = split_containers(args)
    if not named:
        return _check_instance(args)
    problems: list[str] = []
    ingress = [name for name, own in named.items() if flag_values(own, "--port")]
    if len(ingress) != 1:
        problems.append(f"exactly one container must have --port (the ingress container), not {ingress}")
    for name, own in named.items():
        if name in ingress:
            problems.extend(_check_instance([*service, *own]))
        else:
            problems.extend(f"--container={name}: {problem}" for problem in check_sidecar(own))
        for value in flag_values(own, "--depends-on"):
            problems.extend(
                f"--container={name}: --depends-on={dependency} is not a container of this deploy"
                for dependency in value.split(",")
                if dependency not in named or dependency == name
            )
    return problems


def _check_instance(args: Sequence[str]) -> list[str]:
    """The instance's rules, for a single container's deploy (or the service's flags and its ingress's)."""
    problems: list[str] = []
    gen1 = last_value(args, "--execution-environment") == "gen1"
    environment = last_value(args, "--execution-environment")
    if environment not in (None, "gen1", "gen2"):
        problems.append(f"--execution-environment={environment!r} is neither gen1 nor gen2")

    cpu_text = last_value(args, "--cpu")
    cpu = Decimal(1) if cpu_text is None else cpu_value(cpu_text)
    if cpu is None:
        problems.append(f"--cpu={cpu_text!r} is not a number of vCPUs")
    elif cpu < 1:
        if cpu < Decimal("0.08") or cpu != cpu.quantize(Decimal("0.001")):
            problems.append(f"--cpu={cpu_text}: below 1 CPU, 0.08 to 1 in steps of 0.001")
    elif cpu not in WHOLE_CPUS:
        problems.append(f"--cpu={cpu_text}: above 1 CPU only {', '.join(map(str, WHOLE_CPUS))} are allowed")

    memory_text = last_value(args, "--memory")
    memory = 512 * MiB if memory_text is None else memory_bytes(memory_text)
    if memory is None:
        problems.append(f"--memory={memory_text!r}: write it in Mi or Gi (e.g. 512Mi, 2Gi), not {memory_text!r}")
    else:
        least = 128 * MiB if gen1 else 512 * MiB
        if not least <= memory <= 32 * GiB:
            problems.append(f"--memory={memory_text}: from {least // MiB} MiB ({'gen1' if gen1 else 'gen2'}) to 32 GiB")
    if cpu is not None and memory is not None and (cpu in WHOLE_CPUS or cpu < 1):
        if cpu < 1:
            most = 512 * MiB if cpu < Decimal("0.5") else 1 * GiB
            low = 0
        else:
            low, most = CPU_MEMORY[int(cpu)]
        if not low <= memory <= most:
            problems.append(
                f"--cpu={cpu_text or 1} allows {low // MiB if low else 'any'} to {most // MiB} MiB of memory, "
                f"not --memory={memory_text or '512Mi'}"
            )

    concurrency_text = last_value(args, "--concurrency")
    concurrency = None
    if concurrency_text is not None and concurrency_text != "default":
        concurrency = _whole(concurrency_text, "--concurrency", 1, MAX_CONCURRENCY, problems)
    if cpu is not None and cpu < 1:
        if concurrency != 1:
            problems.append(f"--cpu={cpu_text} (below 1 CPU) needs --concurrency=1")
        if not gen1:
            problems.append(f"--cpu={cpu_text} (below 1 CPU) needs --execution-environment=gen1")
        if "--no-cpu-throttling" in args:
            problems.append(f"--cpu={cpu_text} (below 1 CPU) needs request-based billing, not --no-cpu-throttling")

    timeout_text = last_value(args, "--timeout")
    if timeout_text is not None:
        seconds = duration_seconds(timeout_text)
        if seconds is None:
            problems.append(f"--timeout={timeout_text!r} is neither seconds nor a duration like 10m5s")
        elif not 1 <= seconds <= MAX_SERVICE_TIMEOUT_S:
            problems.append(f"--timeout={timeout_text}: a service's requests may take 1 to {MAX_SERVICE_TIMEOUT_S} s")

    bounds = {}
    for flag in ("--min-instances", "--max-instances"):
        text = last_value(args, flag)
        if text is not None and text != "default":
            bounds[flag] = _whole(text, flag, 0 if flag == "--min-instances" else 1, MAX_INSTANCES, problems)
    low_instances, high_instances = bounds.get("--min-instances"), bounds.get("--max-instances")
    if low_instances is not None and high_instances is not None and low_instances > high_instances:
        problems.append(f"--min-instances={low_instances} exceeds --max-instances={high_instances}")

    port = last_value(args, "--port")
    if port is not None:
        _whole(port, "--port", 1, 65535, problems)
    for flag in PROBE_KEYS:
        for value in flag_values(args, flag):
            problems.extend(check_probe(flag, value, port))
    return problems


def check_roles(args: Sequence[str]) -> list[str]:
    """Every --role of a command is a predefined role from ``PREDEFINED_ROLES``."""
    return [
        f"--role={role} is not in the checked list of predefined roles (a typo, or add it with its page from "
        "https://cloud.google.com/iam/docs/roles-permissions)"
        for role in flag_values(args, "--role")
        if role not in PREDEFINED_ROLES
    ]


def check_command(args: Sequence[str]) -> list[str]:
    """Every check that applies to one gcloud command line (args after ``gcloud``)."""
    problems = check_roles(args)
    if list(args[:2]) == ["run", "deploy"]:
        problems.extend(check_deploy(args))
    return problems


@dataclass(frozen=True)
class Command:
    line: str  # as written in the docs (continuations joined)
    args: list[str]  # as bash would pass them to gcloud, variables expanded


def expand(lines: Iterable[str], preamble: str) -> list[Command]:
    """The arguments bash would give gcloud for each command line (after the docs' own assignments)."""
    commands = list(lines)
    script = [preamble, "gcloud() { printf '%s\\0' \"$@\"; printf '\\n\\0'; }"]
    script.extend(commands)
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    calls = result.stdout.split("\n\0")[:-1]
    assert len(calls) == len(commands), (commands, calls)
    return [Command(line, call.split("\0")[:-1]) for line, call in zip(commands, calls, strict=True)]


def split(line: str) -> list[str]:
    """A command line without variables, as the shell would split it (args after ``gcloud``)."""
    words = shlex.split(line)
    return words[1:] if words and words[0] == "gcloud" else words
