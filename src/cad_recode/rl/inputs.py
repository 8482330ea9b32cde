"""An RL run's inputs: the data source and its checks, the reward, the training and validation items.

One source: a prepared dataset (``data_dir``: programs, so truth solids and reward ``iou_gt``) or a
folder of the user's meshes (``mesh_dir``: reward ``iou_input`` or ``cd_input``), opened by
:mod:`cad_recode.rl.sources`. A reward is a built-in name or ``package.module:name`` of your own.
"""

from __future__ import annotations

from pathlib import Path

from cad_recode.errors import InputError, UsageError
from cad_recode.rl.config import RLConfig


def check_data_source(cfg: RLConfig) -> None:
    """One source, a reward that it can feed, and the anchor's folder if one is set; one-line errors otherwise."""
    if cfg.data_dir is None and cfg.mesh_dir is None:
        raise UsageError("give data_dir (a prepared dataset: reward iou_gt) or mesh_dir (a folder of your meshes: "
                         "reward iou_input or cd_input)")
    if cfg.mesh_dir is not None and cfg.reward == "iou_gt":
        raise UsageError("reward iou_gt needs ground-truth programs (data_dir); a mesh_dir has none: use reward "
                         "iou_input (closed meshes) or cd_input (any mesh or cloud)")
    if cfg.families and cfg.data_dir is None:
        raise UsageError("families selects shapes of a labelled prepared dataset (data_dir), not of a mesh_dir")
    if cfg.anchor_data_dir is not None:
        from cad_recode.rl.anchor import check_anchor_dir

        check_anchor_dir(cfg.anchor_data_dir)


def resolve_reward(name: str):
    """A built-in reward by name, or ``package.module:attribute`` (your own callable with a ``name``)."""
    from cad_recode.rl.rewards import get_reward

    if ":" not in name:
        return get_reward(name)
    import importlib

    module_name, _, attribute = name.partition(":")
    try:
        reward = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"reward {name!r} cannot be imported ({err}); give 'package.module:name' of a callable "
                         "reward(solid, target) -> float") from None
    if not callable(reward):
        raise UsageError(f"reward {name!r} is not callable")
    return reward


def open_items(cfg: RLConfig, num_surface_points: int, sandbox) -> tuple[list, list]:
    """(training inputs, fixed validation inputs) from the data source."""
    from cad_recode.rl.sources import open_mesh_folder, open_prepared

    if cfg.data_dir is not None:
        if not Path(cfg.data_dir).is_dir():
            raise InputError(f"data_dir {cfg.data_dir} not found; prepare a dataset with `cad-recode data prepare` "
                             "or point --data_dir at one")
        items = open_prepared(cfg.data_dir, cfg.split, num_surface_points=num_surface_points, sandbox=sandbox,
                              limit=cfg.limit, families=cfg.families or None)
        val = open_prepared(cfg.data_dir, cfg.val_split, num_surface_points=num_surface_points, sandbox=sandbox,
                            limit=cfg.val_num_samples, families=cfg.families or None)
    else:
        items = open_mesh_folder(cfg.mesh_dir, num_surface_points=num_surface_points, limit=cfg.limit)
        val = (open_mesh_folder(cfg.val_mesh_dir, num_surface_points=num_surface_points, limit=cfg.val_num_samples)
               if cfg.val_mesh_dir is not None else items[:cfg.val_num_samples])
    if not items:
        raise InputError(f"no RL inputs in {cfg.data_dir or cfg.mesh_dir} (split {cfg.split}, families "
                         f"{cfg.families or 'all'})")
    return items, val
