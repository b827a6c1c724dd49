"""Kernel-side helpers for the stage notebooks.

The first code cell after ``parameters`` is::

    from runbook_lib.notebook import setup
    ctx = setup(stage, params_file, apply, run_dir)

``setup`` loads and validates the parameters, makes sure nothing the kernel sends can carry a secret
the kernel has resolved, and returns a ``StageContext`` with the parameters, ``resolve`` for secret
references and ``record`` to hand structured results to the runner (``audit/record.py``).

Scrubbing happens in three layers, because a secret can leave the kernel several ways:
1. ``sys.stdout``/``sys.stderr`` are wrapped; text is held until a newline or flush so a secret printed
   in pieces (``print(a, end="")``) is still seen whole;
2. IPython's display formatter output (text/plain, text/html, image alt text ... every str in the
   MIME bundle) is scrubbed, which covers DataFrames, rich reprs and ``execute_result``;
3. the kernel's ``Session.send`` scrubs every message's content as the last net: tracebacks and
   ``evalue`` of errors, ``display(..., raw=True)``, logging handlers that kept the original stream.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook_lib import params as params_mod
from runbook_lib.audit.record import StageRecords, record_bundle
from runbook_lib.audit.redact_io import register_secret
from runbook_lib.secrets import REDACTOR, ResolveContext, SecretRef, parse_ref
from runbook_lib.secrets import resolve as resolve_ref

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


_MARK = "_runbook_scrubbed"
FIGURE_STAGES = frozenset({"verify"})  # stages whose notebooks draw charts (runbook_lib.verify.charts)
_HOLD_LIMIT = 1 << 16  # release held text without a newline beyond this size


class ScrubbingStream:
    """A text stream that scrubs whole lines before handing them to the real stream."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held = ""
        self._lock = threading.Lock()
        setattr(self, _MARK, True)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._held += text
            cut = self._held.rfind("\n") + 1
            if not cut and len(self._held) > _HOLD_LIMIT:
                cut = len(self._held)
            ready, self._held = self._held[:cut], self._held[cut:]
        if ready:
            self._inner.write(REDACTOR.scrub(ready))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            ready, self._held = self._held, ""
        if ready:
            self._inner.write(REDACTOR.scrub(ready))
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)


def _wrap_streams() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not getattr(stream, _MARK, False):
            setattr(sys, name, ScrubbingStream(stream))


def _hook_display_formatter(shell: Any) -> None:
    formatter = shell.display_formatter
    if getattr(formatter, _MARK, False):
        return
    original = formatter.format

    def format_scrubbed(*args: Any, **kwargs: Any) -> Any:
        data, metadata = original(*args, **kwargs)
        return REDACTOR.scrub_obj(data), REDACTOR.scrub_obj(metadata)

    formatter.format = format_scrubbed
    setattr(formatter, _MARK, True)


def _hook_sessions(shell: Any) -> None:
    kernel = getattr(shell, "kernel", None)
    candidates = [
        getattr(kernel, "session", None),
        getattr(getattr(shell, "display_pub", None), "session", None),
        getattr(getattr(shell, "displayhook", None), "session", None),
        getattr(getattr(sys.stdout, "_inner", sys.stdout), "session", None),
        getattr(getattr(sys.stderr, "_inner", sys.stderr), "session", None),
    ]
    seen: set[int] = set()
    for session in candidates:
        if session is None or id(session) in seen or getattr(session, _MARK, False):
            continue
        seen.add(id(session))
        original = session.send

        def send_scrubbed(
            stream: Any,
            msg_or_type: Any,
            content: Any = None,
            *args: Any,
            _send: Any = original,
            **kwargs: Any,
        ) -> Any:
            if REDACTOR.active:
                if isinstance(msg_or_type, dict) and "content" in msg_or_type:
                    msg_or_type = {**msg_or_type, "content": REDACTOR.scrub_obj(msg_or_type["content"])}
                if content is not None:
                    content = REDACTOR.scrub_obj(content)
            return _send(stream, msg_or_type, content, *args, **kwargs)

        session.send = send_scrubbed
        setattr(session, _MARK, True)


def install_scrubbers() -> None:
    """Install every scrubbing layer that applies to this process (idempotent)."""
    _wrap_streams()
    shell = _ipython()
    if shell is not None:
        _hook_display_formatter(shell)
        _hook_sessions(shell)


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _inline_png() -> None:
    shell = _ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    try:
        shell.run_line_magic("matplotlib", "inline")
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # matplotlib is a dependency; a trimmed install just gets no figures
        pass


def build_api_client(params: params_mod.RunbookParams) -> ApiClient:
    """A kubernetes ApiClient for the run's cluster (kubeconfig, context, in-cluster or API host override)."""
    from runbook_lib.kube import api_client

    return api_client(params)


def resolve_context(params: params_mod.RunbookParams, ref: SecretRef | None = None) -> ResolveContext:
    """The ResolveContext for a run; the Kubernetes client is built only for ``k8s:`` references."""
    from runbook_lib import aws

    kube = build_api_client(params) if ref is not None and ref.scheme == "k8s" else None
    return ResolveContext(
        base_dir=params.base_dir,
        aws_region=params.aws.region,
        aws_endpoint_url=params.aws.endpoint_url,
        api_client=kube,
        aws_client=lambda service: aws.client(params, service),
    )


def register_initial_password(params: params_mod.RunbookParams) -> None:
    """Nexus's generated admin.password is a secret too, when the file is reachable from here."""
    path = params.path(params.nexus.initial_password_file)
    if path is None:
        return
    try:
        value = path.read_text().strip()
    except OSError:
        return
    register_secret(value, params.nexus.admin_user)


@dataclass
class StageContext:
    stage: str
    params_file: Path
    params: params_mod.RunbookParams
    apply: bool
    run_dir: Path
    records: StageRecords = field(default_factory=StageRecords)
    _api_client: ApiClient = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "apply" if self.apply else "plan"

    @property
    def api_client(self) -> ApiClient:
        if self._api_client is None:
            self._api_client = build_api_client(self.params)
        return self._api_client

    def resolve(self, ref: str | SecretRef, user: str | None = None) -> str:
        """Resolve a secret reference; the value is registered with the redactor before it is returned."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        ctx = resolve_context(self.params)
        if parsed.scheme == "k8s":
            ctx.api_client = self.api_client
        return resolve_ref(parsed, ctx, user=user)  # registered with the redactor by resolve

    def record(self, key: str, value: Any) -> None:
        """Hand a structured result to the runner (an invisible display_data output)."""
        bundle = REDACTOR.scrub_obj(record_bundle(key, value))
        payload = bundle[next(iter(bundle))]
        self.records.add(payload["key"], payload["value"])
        if _ipython() is not None:
            from IPython.display import display

            display(bundle, raw=True)


def setup(stage: str, params_file: str, apply: bool, run_dir: str) -> StageContext:
    """Load the parameters, install the scrubbers and inline PNG figures, and return the context."""
    install_scrubbers()
    if not params_file:
        raise ValueError(
            "params_file is empty: run this notebook with `runbook run`, or set params_file in the "
            "parameters cell to the absolute path of a parameters YAML file"
        )
    params = params_mod.load(params_file)
    register_initial_password(params)
    if stage in FIGURE_STAGES:
        _inline_png()  # importing matplotlib costs ~0.4 s: only where a stage draws figures
    folder = Path(run_dir) if run_dir else Path.cwd()
    return StageContext(
        stage=stage,
        params_file=Path(params_file).resolve(),
        params=params,
        apply=bool(apply),
        run_dir=folder.resolve(),
    )
