"""`genserve rollout`: a new model version onto every replica that reads one models directory, without
breaking pinned sessions (docs/deploy.md, "Rolling out a new version ..."; the logic:
genserve.deploy.rollout).

    genserve rollout --models-dir models --model text --version 2 --target a:8500,b:8500,c:8500
    genserve rollout --models-dir models --model text --version 2 --target a:8500,b:8500,c:8500 --finish

Exit codes: 0 done, 1 a replica did not answer or did not reach a step in --timeout (one `error:` line
saying what models.config holds now, always a state where every label names a version each replica
serves). Imports no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genserve.cli.common import check_number, fail
from genserve.cli.options import TargetOpt, check_version
from genserve.cli.remote import current_tls


def rollout(
    models_dir: Annotated[Path, typer.Option("--models-dir", help="The models directory every replica reads (its models.config is edited).")],
    model: Annotated[str, typer.Option("--model", help="Served model name.")],
    version: Annotated[int, typer.Option("--version", help="The new version, already exported into --models-dir.")],
    target: TargetOpt,
    label: Annotated[str, typer.Option("--label", help="The version label sessions pin through (moved to --version once every replica loaded it).")] = "stable",
    finish: Annotated[bool, typer.Option("--finish", help="Step 5 only: unload every version but --version (after the longest session pinned to an old one).")] = False,
    drain_seconds: Annotated[Optional[float], typer.Option("--drain-seconds", help="Run step 5 in this command, this many seconds after the label moved (default: stop after step 4; finish later with --finish).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each step may wait for all replicas.")] = 300.0,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between two GetModelStatus calls to a replica.")] = 0.5,
) -> None:
    """Roll MODEL out to VERSION on every replica of --target, one step and one replica at a time."""
    from genserve.clients import GenserveError
    from genserve.deploy.rollout import Rollout, RolloutError
    from genserve.repository import RepositoryError, check_plain_name

    check_version(version)
    if not label.strip():
        raise fail("--label must not be empty")
    check_number(timeout, "--timeout", 0.0, strictly_above=True)
    check_number(poll_interval, "--poll-interval", 0.0, strictly_above=True)
    if drain_seconds is not None:
        check_number(drain_seconds, "--drain-seconds", 0.0)
        if finish:
            raise fail("give --finish or --drain-seconds, not both")
    if not models_dir.is_dir():
        raise fail(f"--models-dir {models_dir} is not a folder")
    try:
        check_plain_name(model)
        plan = Rollout(models_dir, model, version, target, label=label, timeout=timeout,
                       interval=poll_interval, tls=current_tls(), say=typer.echo)
        plan.run(finish=finish, drain_seconds=drain_seconds)
    except (RolloutError, RepositoryError, FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    except GenserveError as e:
        raise fail(f"{e.code.name}: {e.details} (models.config is in a safe state: rerun to resume)") from None
    except OSError as e:
        raise fail(f"{models_dir}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        raise fail("interrupted (models.config is in a safe state: rerun to resume)", code=130) from None


COMMANDS = {"rollout": rollout}
