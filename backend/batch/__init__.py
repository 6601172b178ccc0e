"""The batch job: ``python -m backend.batch INPUT OUTPUT`` classifies a folder (on Cloud Run, a Cloud Storage
bucket mounted as a volume) or a list of paths into result shards (Parquet, or JSON lines).

Same image, classifier, decoders, limits and budgets as the service. A Cloud Run job runs N tasks of it, each
taking the images whose path hashes to its ``CLOUD_RUN_TASK_INDEX`` (no coordinator); a retried or re-run
task skips what its shards already hold. See docs/batch.md.
"""

from ._inputs import InputError, Item, list_inputs, task_of
from ._job import Summary, Task, TaskConfigError, model_version
from ._output import FORMATS, SCHEMA, Format, OutputError, marker_name, shard_name

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Format",
    "InputError",
    "Item",
    "OutputError",
    "Summary",
    "Task",
    "TaskConfigError",
    "list_inputs",
    "marker_name",
    "model_version",
    "shard_name",
    "task_of",
]
