"""A plan as it travels to Ray workers: pickled with every endpoint's API key left out.

Ray keeps what ``ray.put`` stores in its object store (shared memory, spilled to disk when full) and an
actor's constructor arguments in its control store (GCS). Neither should hold a model endpoint's key in
clear. ``seal_plan`` pickles the plan with each ``ModelEndpoint.api_key`` replaced by a reference
(``secret-0``, ``secret-1``...) and returns the keys apart; the coordinator sends them to its actors as a
plain argument of each call, which Ray hands to the actor's process directly and stores nowhere.
``unseal_plan`` puts them back on the worker.
"""

from __future__ import annotations

import io
import pickle
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import cloudpickle

from evalstack.engine.plan import EvalPlan
from evalstack.errors import EvalstackError
from evalstack.inference.base import ModelEndpoint

_keys_being_unsealed: ContextVar[Mapping[str, str] | None] = ContextVar("keys_being_unsealed", default=None)


@dataclass(frozen=True)
class SealedPlan:
    """A pickled plan whose endpoints' keys are references; ``id`` names this sealing."""

    id: str
    blob: bytes


class _SealingPickler(cloudpickle.Pickler):
    """cloudpickle, with each endpoint that has a key pickled as a reference to it."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.references: dict[str, str] = {}  # key -> reference

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is ModelEndpoint and obj.api_key:
            reference = self.references.setdefault(obj.api_key, f"secret-{len(self.references)}")
            return _endpoint_with_key, (obj.kind, obj.model, obj.base_url, reference)
        return super().reducer_override(obj)


def seal_plan(plan: EvalPlan) -> tuple[SealedPlan, dict[str, str]]:
    """``plan`` pickled without its endpoints' keys, and the keys by reference.

    Raises ``EvalstackError`` when a key is still in the pickle (held somewhere other than an endpoint),
    so that it is never sent through the object store."""
    buffer = io.BytesIO()
    pickler = _SealingPickler(buffer)
    try:
        pickler.dump(plan)
    except Exception as exc:
        raise EvalstackError(f"this job's plan cannot be sent to the Ray cluster: {exc}") from exc
    blob = buffer.getvalue()
    if any(key.encode() in blob for key in pickler.references):
        raise EvalstackError(
            "this job's plan holds a model endpoint's API key outside the endpoint, so it cannot be sent to "
            "the Ray cluster without the key; run it with executor: local"
        )
    keys = {reference: key for key, reference in pickler.references.items()}
    return SealedPlan(uuid.uuid4().hex, blob), keys


def unseal_plan(sealed: SealedPlan, keys: Mapping[str, str]) -> EvalPlan:
    """The plan ``seal_plan`` sealed, its endpoints given back their keys."""
    token = _keys_being_unsealed.set(keys)
    try:
        plan = pickle.loads(sealed.blob)
    finally:
        _keys_being_unsealed.reset(token)
    if not isinstance(plan, EvalPlan):
        raise EvalstackError(f"a sealed plan holds a {type(plan).__name__}, not a plan")
    return plan


def _endpoint_with_key(kind: Any, model: str, base_url: str | None, reference: str) -> ModelEndpoint:
    keys = _keys_being_unsealed.get() or {}
    if reference not in keys:
        raise EvalstackError(f"the API key of the model endpoint {model!r} did not come with its plan")
    return ModelEndpoint(kind=kind, model=model, base_url=base_url, api_key=keys[reference])
