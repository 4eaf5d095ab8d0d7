"""Orbax checkpoints of a training run, so an interrupted run can resume.

A checkpoint contains everything the next epoch depends on: the parameters,
the rest of the model state (BatchNorm running statistics), the optimizer
state, the random key that orders the data and draws the augmentation, and
the number of epochs completed. The data order of an epoch is a function of
that key alone, so a resumed run repeats exactly the steps that an
uninterrupted run would take. Orbax writes each checkpoint to a temporary
directory and renames it when complete, so a run killed while saving leaves
the previous checkpoint intact.
"""

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def open_manager(run_dir: str | Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """Open (or create) the checkpoint directory of a run, keeping the newest `max_to_keep`."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options)


def training_state(params: Any, rest: Any, opt_state: Any, key: jax.Array, epoch: int) -> dict[str, Any]:
    """Pack a run's state into the tree that `save` writes and `restore_latest` returns."""
    return {
        "params": params,
        "rest": rest,
        "opt_state": opt_state,
        "key": jax.random.key_data(key),
        "epoch": np.asarray(epoch, np.int32),
    }


def unpack_key(state: dict[str, Any]) -> jax.Array:
    """Return the typed random key stored by `training_state`."""
    return jax.random.wrap_key_data(state["key"])


def save(manager: ocp.CheckpointManager, state: dict[str, Any]) -> None:
    """Write `state` as the checkpoint of its epoch and wait until it is on disk.

    Waiting keeps the guarantee simple: once `save` returns, a kill cannot
    lose this epoch.
    """
    epoch = int(state["epoch"])
    manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, target: dict[str, Any]) -> dict[str, Any] | None:
    """Return the newest checkpoint restored into the structure of `target`, or None.

    `target` is a state of the same run built fresh (for example the
    initial one), which gives the tree structure, shapes, dtypes and
    shardings of the restored arrays.
    """
    epoch = manager.latest_step()
    if epoch is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
