"""What the control API lists, shared by its routes (`/lms/models`, `/lms/ps`, `/lms/downloads`) and the live feed
(`/lms/events`), so each list has one shape wherever it is read."""

from __future__ import annotations

import asyncio

from lms.manager.cluster import replica_status


def downloaded(manager) -> list[dict]:
    """The models on disk, each with how many instances of it are loaded."""
    counts: dict[str, int] = {}
    for model in manager.loaded.values():
        counts[model.entry.model_key] = counts.get(model.entry.model_key, 0) + 1
    result = []
    for entry in manager.entries():
        info = entry.info()
        info["loadedInstances"] = counts.get(entry.model_key, 0) if entry.variant_key == entry.selected_variant else 0
        info["variantKey"] = entry.variant_key
        result.append(info)
    return result


async def loaded(manager) -> list[dict]:
    """The loaded models (`lms ps`), cluster ones with the state of their replicas."""
    models = sorted(manager.loaded.values(), key=lambda m: m.identifier)
    infos = [m.ps_info() for m in models]
    on_cluster = [(info, m) for info, m in zip(infos, models, strict=True) if m.placement]
    statuses = await asyncio.gather(*(replica_status(m.worker) for _info, m in on_cluster))
    for (info, _model), status in zip(on_cluster, statuses, strict=True):
        info.update(replicas=status["replicas"], clusterStatus=status["status"])
    return infos


def downloads(jobs) -> list[dict]:
    return [job.status_dict() for job in jobs.jobs.values()]
