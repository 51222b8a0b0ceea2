"""A rolling update of one model over a fleet that shares a models directory, without breaking pinned
sessions (docs/deploy.md, "Rolling out a new version without breaking pinned sessions"):

    step 2  version N+1 is on disk (exported before; no replica loads it while the policy names N only)
    step 3  models.config serves {versions any replica serves now, the label's version} + {N+1};
            wait until EVERY replica reports N+1 AVAILABLE (GetModelStatus, one replica after another)
    step 4  models.config: label -> N+1; wait until every replica answers the label with N+1
    step 5  (finish, later) models.config serves {N+1} only; wait until every replica unloaded the rest

The invariant kept at every write: each label of the model names a version every replica serves. The
label moves only after every replica reported N+1 AVAILABLE (checked once more right before the write);
step 5 runs only once every replica answers the label with N+1 and no other label names a version it
unloads (TF Serving refuses a config whose label names a version that is not AVAILABLE: server_core.cc,
UpdateModelVersionLabelMap, FAILED_PRECONDITION unless --allow_version_labels_for_unavailable_models). A replica
that does not answer at the start stops the rollout before any write; a timeout leaves models.config
in its last safe state and says which. Each edit is an atomic rewrite of models.config
(genserve.repository.set_version_policy / set_version_labels, through genserve.files).

    python -c "from genserve.deploy.rollout import replica_addresses; print(replica_addresses('a:1,b:2'))"
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CALL_TIMEOUT = 5.0  # seconds per GetModelStatus (polled; one unanswered poll is retried until the deadline)


class RolloutError(Exception):
    """The rollout stopped: one line saying at which step, on which replica, and what models.config holds."""


def replica_addresses(target: str) -> list[str]:
    """Each replica of a target, to be asked on its own: "a:1,b:2" -> ["a:1", "b:2"]; "dns:///name:port"
    -> every address the name resolves to now (a headless Service lists its ready pods only)."""
    from genserve.clients.replicas import host_port, split_target

    entries = split_target(target)
    if len(entries) == 1 and entries[0].startswith("dns:///"):
        host, port = host_port(entries[0]) or ("", 0)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise RolloutError(f"cannot resolve {host!r} of {target} (DNS: {e})") from None
        found = dict.fromkeys(f"[{a[4][0]}]:{port}" if a[0] == socket.AF_INET6 else f"{a[4][0]}:{port}"
                              for a in infos)
        return list(found)
    return entries


@dataclass
class Rollout:
    """One model's rollout to `version` over the replicas of `target`, all reading `models_dir`.

    Args:
        models_dir: the models directory every replica reads (its models.config is edited here).
        model, version: the model and the new version (already exported into models_dir).
        target: the replicas, "host:port,host:port" or "dns:///name:port" (each asked on its own).
        label: the version label sessions pin through (`Client.pinned(model, version_label=label)`).
        timeout: seconds each step may wait for all replicas together.
        interval: seconds between two GetModelStatus polls of a replica.
        tls: a genserve.clients.TlsSettings, or None for plaintext.
        say: receives one line per step and replica (progress).
    """

    models_dir: Path
    model: str
    version: int
    target: str
    label: str = "stable"
    timeout: float = 300.0
    interval: float = 0.5
    tls: object = None
    say: Callable[[str], None] = print
    replicas: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir)
        self.replicas = replica_addresses(self.target)

    # -- models.config ----------------------------------------------------------------------------
    def _entry(self):
        from genserve.repository import locate_models

        found = locate_models(self.models_dir).get(self.model)
        if found is None:
            raise RolloutError(f"model {self.model!r} is not served from {self.models_dir}")
        if found.error:
            raise RolloutError(f"model {self.model!r}: {found.error}")
        return found

    def _on_disk(self, found) -> list[int]:
        from genserve.repository import list_versions

        return list_versions(found.local, self.models_dir)

    # -- the replicas -----------------------------------------------------------------------------
    def _client(self, address: str):
        from genserve.clients import Client, RetryPolicy

        options = ()
        if self.tls is not None and self.target.startswith("dns:///"):  # the certificate names the host
            options = (("grpc.ssl_target_name_override", self.target[len("dns:///"):].rpartition(":")[0]),)
        return Client(address, timeout=CALL_TIMEOUT, retry=RetryPolicy.disabled(), tls=self.tls,
                      options=options)

    def _states(self, client) -> dict[int, str]:
        return {s.version: s.state for s in client.status(self.model)}

    def _label_version(self, client) -> int | None:
        """The version the replica resolves the label to (None: it does not know the label, or not for
        a loaded version). Asked by GetModelMetadata: TF Serving's GetModelStatus ignores
        version_label (get_model_status_impl.cc reads model_spec.version only)."""
        from genserve.clients import GenserveError

        try:
            reply = client.metadata_response(self.model, version_label=self.label)
        except GenserveError as e:
            if e.code.name == "INVALID_ARGUMENT":  # "Unrecognized servable version label"
                return None
            raise
        return int(reply.model_spec.version.value) if reply.model_spec.HasField("version") else None

    def _available(self, client) -> set[int]:
        return {v for v, s in self._states(client).items() if s == "AVAILABLE"}

    def _wait(self, step: str, clients: dict, probe: Callable, done: str, state: str) -> None:
        """Ask each replica in turn until probe(client) returns (True, _); one line per replica. On the
        step's deadline: RolloutError naming the replica, what it said last (probe's second value or
        the gRPC error) and `state` (what models.config holds now)."""
        from genserve.clients import GenserveError

        deadline = time.monotonic() + self.timeout
        for address, client in clients.items():
            started = time.monotonic()
            while True:
                try:
                    ok, said = probe(client)
                    if ok:
                        break
                except GenserveError as e:
                    said = f"{e.code.name}: {' '.join(e.details.split())}"
                if time.monotonic() >= deadline:
                    raise RolloutError(f"step {step}: replica {address} did not reach '{done}' within "
                                       f"{self.timeout:g} s (last answer: {said}); {state}")
                time.sleep(self.interval)
            self.say(f"step {step}: {address} {done} ({time.monotonic() - started:.1f} s)")

    def _open(self) -> dict:
        """A client per replica; every replica must answer GetModelStatus for the model now."""
        from genserve.clients import GenserveError

        clients = {address: self._client(address) for address in self.replicas}
        for address, client in clients.items():
            try:
                self._states(client)
            except GenserveError as e:
                self._close(clients)
                raise RolloutError(f"replica {address} does not answer for model {self.model!r} "
                                   f"({e.code.name}: {' '.join(e.details.split())}); nothing was changed") from None
        return clients

    @staticmethod
    def _ask(address: str, probe: Callable, client):
        """probe(client), a replica that does not answer as a RolloutError (before a write: nothing changed)."""
        from genserve.clients import GenserveError

        try:
            return probe(client)
        except GenserveError as e:
            raise RolloutError(f"replica {address} does not answer ({e.code.name}: {' '.join(e.details.split())}); "
                               "models.config was not changed by this step") from None

    @staticmethod
    def _close(clients: dict) -> None:
        for client in clients.values():
            client.close()

    # -- steps 2-4 --------------------------------------------------------------------------------
    def start(self) -> list[int]:
        """Steps 2-4. Returns the old versions still loaded (step 5 unloads them)."""
        from genserve.repository import set_version_labels, set_version_policy

        found = self._entry()
        on_disk = self._on_disk(found)
        new, label = self.version, self.label
        if new not in on_disk:
            raise RolloutError(f"version {new} of model {self.model!r} is not in {found.local} (versions on "
                               f"disk: {', '.join(map(str, on_disk)) or 'none'}); export it first")
        self.say(f"step 2: version {new} of {self.model} is on disk ({found.local / str(new)})")
        clients = self._open()
        try:
            old_label = found.entry.version_labels.get(label)
            serving = set().union(*(self._available(c) for c in clients.values()))
            keep = sorted((serving | {old_label}) - {None, new})
            versions = tuple(sorted({*keep, new}))
            shown = ", ".join(map(str, keep)) or "none"
            if found.entry.version_policy != ("specific", versions):
                set_version_policy(self.models_dir, self.model, ("specific", versions))
            self.say(f"step 3: models.config: {self.model} serves versions {', '.join(map(str, versions))} "
                     f"(old: {shown}) on {len(clients)} replica(s)")
            label_state = (f"label {label!r} still names {old_label}, which every replica serves" if old_label
                           else f"label {label!r} is not set")

            def loaded(client):
                state = self._states(client).get(new, "unknown")
                return state == "AVAILABLE", f"version {new} {state}"

            self._wait("3", clients, loaded, f"serves version {new}",
                       f"{label_state}; models.config serves versions {', '.join(map(str, versions))}: "
                       "rerun to resume")
            for address, client in clients.items():  # right before the label moves: still there?
                if not self._ask(address, loaded, client)[0]:
                    raise RolloutError(f"step 4: replica {address} no longer serves version {new}; "
                                       f"{label_state}")
            set_version_labels(self.models_dir, self.model, {label: new})
            self.say(f"step 4: models.config: label {label} -> {new} (was {old_label or 'unset'})")

            def labelled(client):
                said = self._label_version(client)
                return said == new, f"label {label} -> {said}"

            self._wait("4", clients, labelled, f"answers label {label} with version {new}",
                       f"models.config names {new} as {label!r}, loaded on every replica (safe): rerun to "
                       "check again")
        finally:
            self._close(clients)
        return keep

    # -- step 5 -----------------------------------------------------------------------------------
    def finish(self) -> list[int]:
        """Step 5: serve only the new version. Returns the versions unloaded."""
        from genserve.repository import set_version_policy

        found = self._entry()
        new, label = self.version, self.label
        labels = found.entry.version_labels
        if labels.get(label) != new:
            raise RolloutError(f"label {label!r} of {self.model!r} names {labels.get(label, 'nothing')}, not "
                               f"{new}: run the rollout (without --finish) first; nothing was changed")
        others = sorted(f"{k}={v}" for k, v in labels.items() if v != new)
        if others:
            raise RolloutError(f"label(s) {', '.join(others)} of {self.model!r} name a version that finishing "
                               f"would unload; move or remove them first; nothing was changed")
        clients = self._open()
        try:
            for address, client in clients.items():
                said = self._ask(address, self._label_version, client)
                if said != new:
                    raise RolloutError(f"step 5: replica {address} answers label {label} with {said}, not "
                                       f"{new} (it has not read models.config yet?); nothing was changed")
            old = sorted(set().union(*(self._available(c) for c in clients.values())) - {new})
            set_version_policy(self.models_dir, self.model, ("specific", (new,)))
            self.say(f"step 5: models.config: {self.model} serves version {new} only "
                     f"(unloading: {', '.join(map(str, old)) or 'none'})")

            def unloaded(client):
                rest = sorted(self._available(client) - {new})
                return not rest, f"still serves {', '.join(map(str, rest))}"

            self._wait("5", clients, unloaded, f"serves version {new} only",
                       f"models.config serves version {new} only; the replica unloads at its next read")
        finally:
            self._close(clients)
        return old

    # -- the whole command ------------------------------------------------------------------------
    def run(self, finish: bool = False, drain_seconds: float | None = None) -> None:
        """`genserve rollout`: steps 2-4 (finish=False), then step 5 after `drain_seconds` if given;
        or step 5 alone (finish=True). Prints what the user runs next."""
        if finish:
            self.finish()
            self.say(f"done: every replica serves {self.model} version {self.version} only")
            return
        old = self.start()
        shown = ", ".join(map(str, old)) or "none"
        if drain_seconds is None:
            self.say(f"done: every replica answers {self.label} with version {self.version}; old version(s) "
                     f"{shown} stay loaded for the sessions pinned to them: after the longest session, "
                     "rerun this command with --finish to unload them")
            return
        self.say(f"step 5: waiting {drain_seconds:g} s (--drain-seconds) for the sessions pinned to {shown}")
        time.sleep(drain_seconds)
        self.finish()
        self.say(f"done: every replica serves {self.model} version {self.version} only")
