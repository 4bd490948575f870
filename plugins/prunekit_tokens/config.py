"""Options of the Token Cropr plugin (torch-free: imported by the plugin spec)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prunekit import option


@dataclass
class CroprConfig:
    """How many tokens each Cropr module drops, and how the scorer is built.

    Modules sit after every block but the last (after every block but the last two
    with Last Layer Fusion), unless ``prune_after`` names the blocks. Module ``i``
    drops ``prune_counts[i]`` tokens, or ``prune_count`` for every module when
    ``prune_counts`` is empty.
    """

    prune_count: int = option(8, "tokens dropped by every module (R in the paper)")
    prune_counts: tuple[int, ...] = option((), "tokens dropped per module, comma separated (overrides --prune-count)")
    prune_after: tuple[int, ...] = option((), "block indices followed by a module (default: all but the last, or last two with LLF)")
    llf: bool = option(False, "Last Layer Fusion: put the pruned tokens back before the final block (dense tasks)")
    num_queries: int = option(1, "learnable queries per module (1 for classification, one per patch for dense tasks)")
    num_heads: int = option(0, "scorer heads (0: the host model's head count)")
    pre_norm: bool = option(True, "LayerNorm on the (detached) tokens before scoring")
    qk_proj: bool = option(False, "learned query/key projections (identity by default)")
    v_proj: bool = option(False, "learned value projection in the aggregator (identity by default)")
    mlp_ratio: float = option(4.0, "hidden width of the aggregator MLP, relative to the model width")
    aggregate_prefix: bool = option(True, "let the auxiliary cross-attention read the prefix (CLS) tokens, as in "
                                   "the paper; off: patch tokens only (see modules.py)")
    aux_out: int = option(0, "outputs of each auxiliary head (classes, or patch*patch*classes for masks); 0: no heads")
    aux_weight: float = option(1.0, "weight of the summed auxiliary losses")
    train_mode: Literal["frozen", "joint"] = option("frozen", "train only the Cropr modules, or backbone and modules")

    def __post_init__(self) -> None:
        if self.prune_count < 0 or any(r < 0 for r in self.prune_counts):
            raise ValueError("prune counts must be >= 0")
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if self.num_heads < 0 or self.aux_out < 0:
            raise ValueError("num_heads and aux_out must be >= 0")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.prune_counts and self.prune_after and len(self.prune_counts) != len(self.prune_after):
            raise ValueError(
                f"prune_counts has {len(self.prune_counts)} entries but prune_after names {len(self.prune_after)} blocks"
            )

    def plan(self, num_blocks: int) -> list[tuple[int, int]]:
        """``[(block_index, tokens_dropped_after_it), ...]`` for a model of ``num_blocks`` blocks."""
        last_allowed = num_blocks - (3 if self.llf else 2)
        if self.prune_after:
            blocks = list(self.prune_after)
            bad = [b for b in blocks if not 0 <= b <= last_allowed]
            if bad or sorted(set(blocks)) != blocks:
                raise ValueError(
                    f"prune_after must be increasing block indices in 0..{last_allowed} "
                    f"for {num_blocks} blocks{' with LLF' if self.llf else ''}, got {blocks}"
                )
        else:
            n = len(self.prune_counts) if self.prune_counts else last_allowed + 1
            if n > last_allowed + 1:
                raise ValueError(f"{n} prune counts but only {last_allowed + 1} module slots in {num_blocks} blocks")
            blocks = list(range(n))
        counts = list(self.prune_counts) if self.prune_counts else [self.prune_count] * len(blocks)
        return list(zip(blocks, counts))
