"""The peers' service code: each module runs inside its peer's own venv (``.venv-peers/<name>``), never here."""
