"""`winback package` (MLflow registry → BentoML model store) and `winback serve` (runs `bentoml serve`, supervised)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from features.errors import DataError
from winback.cli_common import console, err_console, fail, flag, handle_errors

SERVICE = "serving.service:Winback"
SERVICE_NAME = "winback"


def package(
    churn_model: str = typer.Option("models:/winback-churn@champion", help="MLflow model URI of the churn model."),
    uplift_model: str = typer.Option("models:/winback-uplift@champion", help="MLflow model URI of the uplift model."),
) -> None:
    """Import the champion models into the BentoML model store (tags winback-churn, winback-uplift)."""
    import mlflow

    from serving.api import model_store
    from training.tracking import TrackingSettings

    tracking_uri = TrackingSettings.from_env().tracking_uri
    needs_store = any(uri.startswith(("models:/", "runs:/")) for uri in (churn_model, uplift_model))
    if needs_store and tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri[len("sqlite:///"):])
        if not store.is_file():  # MLflow would create an empty store here and then find no model
            fail(f"no MLflow tracking store at {tracking_uri} ({store.absolute()} does not exist): run where "
                 f"`winback train` wrote it, or set MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    for model, uri in ((model_store.CHURN, churn_model), (model_store.UPLIFT, uplift_model)):
        try:
            stored = model_store.import_mlflow_model(model, uri)
        except DataError as exc:
            fail(f"{exc} (tracking store {tracking_uri})")
        labels = stored.info.labels
        console.print(f"{stored.tag}  ← {uri}  (registry version {labels.get('registry_version', '-')}, "
                      f"run {labels.get('mlflow_run_id', '-')})", highlight=False, soft_wrap=True)


ACCESS_LOG_OFF = f"services.{SERVICE_NAME}.logging.access.enabled=false"


def serve(
    port: int = typer.Option(3000, min=1, max=65535, help="HTTP port."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 for every interface."),
    workers: int = typer.Option(None, min=1, help="Worker processes (default: the service's 2, one per core)."),
    features: Path = typer.Option(None, "--features", help="Feature snapshot for lookups by customer_id "
                                  "(sets WINBACK_FEATURES; a relative path is taken from this directory)."),
    access_log: bool = flag("--access-log/--no-access-log", "One log line per request (BentoML's access log).",
                            default=True),
    graceful_timeout: int = typer.Option(5, min=1, help="Seconds requests in flight may take to finish "
                                         "after SIGTERM / Ctrl-C before the server is stopped."),
    online_store: str = typer.Option(None, "--online-store", help="Online store for POST /events and lookups by "
                                     "customer_id that follow every event: sqlite:///online.db (a file, relative to "
                                     "this directory) or redis://host:6379/0 (sets WINBACK_ONLINE_STORE)."),
    as_of: str = typer.Option(None, "--as-of", help="With --online-store: the store's day YYYY-MM-DD for features "
                              "and scores (replays, back-tests; default: today, UTC). Sets WINBACK_AS_OF."),
    profiles: Path = typer.Option(None, "--profiles", help="With --online-store: customer attributes the models "
                                  "need (.csv or .parquet; sets WINBACK_PROFILES)."),
    trigger_churn: float = typer.Option(None, "--trigger-churn", help="With --online-store: churn probability whose "
                                        "crossing writes a trigger (default 0.5; WINBACK_TRIGGER_CHURN)."),
    trigger_stages: str = typer.Option(None, "--trigger-stages", help="With --online-store: lifecycle stages whose "
                                       "entry or exit writes a trigger (default at_risk,dormant,churned)."),
) -> None:
    """Start the online service (`bentoml serve serving.service:Winback`) and stay its parent.

    SIGTERM / SIGINT stop the whole server (arbiter and workers) and free the port; a worker that
    cannot start (unreadable snapshot, corrupt model) stops it with one line and a non-zero exit.
    """
    import bentoml

    from serving.api import model_store

    for model in (model_store.CHURN, model_store.UPLIFT):
        try:
            bentoml.models.get(model.name)
        except bentoml.exceptions.NotFound:
            fail(model_store.missing_message(model))
    env = dict(os.environ)
    snapshot = features if features is not None else env.get("WINBACK_FEATURES") or None
    option = "--features" if features is not None else "WINBACK_FEATURES"
    if snapshot is not None:
        # the server runs in the project's directory: resolve against the user's, where they typed it
        path = Path(snapshot).expanduser().resolve()
        if not path.is_file():
            fail(f"{option}: {snapshot}: file not found (looked for {path})")
        if not os.access(path, os.R_OK):
            fail(f"{option}: {snapshot}: not readable by this user")
        env["WINBACK_FEATURES"] = str(path)
    _online_env(env, online_store, as_of, profiles, trigger_churn, trigger_stages)
    options = [o for o in env.get("BENTOML_CONFIG_OPTIONS", "").split() if o]
    if workers is not None:
        options.append(f"services.{SERVICE_NAME}.workers={workers}")
    if not access_log:
        options.append(ACCESS_LOG_OFF)
    if options:
        env["BENTOML_CONFIG_OPTIONS"] = " ".join(options)
    working_dir = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--port", str(port), "--host", host,
            "--working-dir", str(working_dir), "--timeout-graceful-shutdown", str(graceful_timeout)]
    raise typer.Exit(supervise(argv, env, grace=graceful_timeout + 5))


def _online_env(env: dict[str, str], online_store: str | None, as_of: str | None, profiles: Path | None,
                trigger_churn: float | None, trigger_stages: str | None) -> None:
    """The online store's settings for the workers, checked here so a mistake is one line before any start."""
    from winback.cli_common import parse_date

    url = online_store or env.get("WINBACK_ONLINE_STORE") or None
    if url is None:
        given = [n for n, v in (("--as-of", as_of), ("--profiles", profiles), ("--trigger-churn", trigger_churn),
                                ("--trigger-stages", trigger_stages)) if v is not None]
        if given:
            fail(f"{given[0]}: only with --online-store")
        return
    if env.get("WINBACK_FEATURES"):
        fail("--features and --online-store: customers are looked up in one of them; keep one")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser()
        if not path.is_absolute():  # the server runs in the project's directory: anchor it where typed
            path = path.resolve()
        if not path.parent.is_dir():
            fail(f"--online-store {url}: folder {path.parent} does not exist")
        url = f"sqlite:///{path}"
    else:
        from winback.cli_online import open_online_store

        open_online_store(url).close()  # unreachable Redis: one line now, not a worker that cannot start
    env["WINBACK_ONLINE_STORE"] = url
    if as_of is not None:
        env["WINBACK_AS_OF"] = str(parse_date(as_of, "--as-of").date())
    if profiles is not None:
        path = profiles.expanduser().resolve()
        if not path.is_file():
            fail(f"--profiles: {profiles}: file not found (looked for {path})")
        env["WINBACK_PROFILES"] = str(path)
    if trigger_churn is not None:
        if not 0.0 < trigger_churn < 1.0:
            fail(f"--trigger-churn: {trigger_churn} must be between 0 and 1")
        env["WINBACK_TRIGGER_CHURN"] = str(trigger_churn)
    if trigger_stages is not None:
        from winback.cli_online import trigger_rule

        trigger_rule(0.5, trigger_stages)
        env["WINBACK_TRIGGER_STAGES"] = trigger_stages


def supervise(argv: list[str], env: dict[str, str], grace: float) -> int:
    """Run the server as a child in its own process group and stay its parent until it ends.

    SIGTERM / SIGINT / SIGHUP are passed to the server, which stops its workers; whatever is still alive
    `grace` seconds later is killed with the group, so no worker outlives `winback serve` holding the
    port. If this process is killed outright, the kernel sends the server SIGTERM (Linux parent-death
    signal). A worker that cannot start writes why to a file named in WINBACK_STARTUP_ERROR_FILE and
    stops the server; that line is printed here and the exit code is 1. Returns the exit code.
    """
    import signal
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryDirectory(prefix="winback-serve-") as tmp:
        error_file = Path(tmp) / "startup-error"
        child = subprocess.Popen(argv, env={**env, "WINBACK_STARTUP_ERROR_FILE": str(error_file)},
                                 process_group=0, preexec_fn=_die_with_parent)
        stopping: list[float] = []

        def forward(signum, _frame):
            if not stopping:
                stopping.append(time.monotonic())
            try:
                os.kill(child.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > grace:
                    _kill_group(child.pid)
        _kill_group(child.pid)  # workers the arbiter did not reap (it was killed, or it crashed)
        if error_file.is_file():
            err_console.print(f"[bold red]error:[/] {error_file.read_text().strip()}", highlight=False, soft_wrap=True)
            return 1
        if stopping:
            return 0
        return code if code >= 0 else 128 - code


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when `winback serve` dies, however it dies (Linux only)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_group(pgid: int) -> None:
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def register(app: typer.Typer) -> None:
    app.command("package")(handle_errors(package))
    app.command("serve")(handle_errors(serve))
