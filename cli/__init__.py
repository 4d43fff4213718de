"""The `gradus` command: the top layer. It wires flows, tasks, infra and the core library together, importing
each lazily inside the command that needs it (so `gradus --help` starts fast and loads no Prefect or torch)."""
