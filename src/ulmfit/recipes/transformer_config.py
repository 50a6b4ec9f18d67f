"""The ULMFiT recipe on a transformer backbone: its registration and its section (`transformer` in
config.json). `ulmfit fit --backbone minilm` (or a Hugging Face folder) selects it; the recipe itself
is recipes/transformer.py (torch, transformers); this module stays torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ulmfit.recipes import fields as F
from ulmfit.recipes.registry import Recipe, lazy, register

OBJECTIVES = ("ulmfit", "siatl")


@dataclass
class TransformerTrainConfig:
    # minilm (the all-MiniLM-L6-v2 package) or a local Hugging Face BERT-type model folder.
    backbone: str = "minilm"
    # ulmfit: masked-word fine-tuning on the text at hand, then the classifier (two phases);
    # siatl: no separate LM phase, the classifier trains with SiATL's auxiliary masked-word loss.
    objective: str = F.spec("ulmfit", choices=OBJECTIVES)
    # How documents are read (models/transformer.py, TransformerConfig).
    window: int = F.spec(128, ge=3)  # word pieces per encoder call incl. [CLS]/[SEP]; ~97% of tweets fit in one
    overlap: int = F.spec(32, ge=0)  # pieces shared by consecutive windows of a longer document
    blocks_per_group: int = F.spec(2, ge=1)  # MiniLM's 6 blocks -> 3 groups; + embeddings + head = 5 layer groups
    # mean: the masked mean over every real word piece, how all-MiniLM-L6-v2 was trained to pool;
    # concat: [last, max, mean] (ULMFiT §3.3, the AWD-LSTM classifier's). Measured side by side on the
    # same samples and CPU (docs/BENCHMARKS.md, "Ninth session: mean or concat pooling"): mean was at or above concat
    # at 100 / 500 / 2,000 labels on the tweets (3-seed medians) and on the 40/55/5 tweets at 500.
    pooling: str = F.spec("mean", choices=("concat", "mean"))
    # Target-task masked-word fine-tuning (ULMFiT §3.2 on an encoder). Off by default: measured on the
    # tweets at 500 labels (seed 0, docs/BENCHMARKS.md "ULMFiT on MiniLM"), 1 epoch over 5,000 texts gave
    # test macro-F1 0.6712 vs 0.6689 without it (+0.2, noise) and validation 0.6650 vs 0.6791 (-1.4),
    # for ~40% more training time: the package ships no masked-word head, and one epoch mostly trains
    # the new head (masked-word accuracy 0.06 -> 0.17). 1 turns it on.
    mlm_epochs: int = F.spec(0, ge=0)
    mlm_lr: float = F.learning_rate(1e-4)  # top group (MLM head); BERT pretraining used 1e-4
    mlm_bs: int = F.batch_size(32)
    mlm_prob: float = F.spec(0.15, gt=0, lt=1)  # BERT §3.1
    mlm_max_docs: int | None = F.spec(5_000, ge=2)  # at most this many documents of LM text, a seeded sample (CPU time)
    # Classifier with gradual unfreezing: one rate and epoch count per stage (head, -2, -3, all).
    # The head is new, so its stage runs at 1e-3; once the pretrained blocks train, the top rate drops
    # to the usual BERT fine-tuning range (5e-5..2e-4); lower groups get lr / lr_factor per group.
    lrs: tuple[float, ...] = F.stage_lrs((1e-3, 2e-4, 1e-4, 1e-4))
    epochs: tuple[int, ...] = F.stage_epochs((1, 1, 1, 2))
    # Few labels: the last stage (everything unfrozen) gets extra epochs until it runs at least this
    # many optimizer steps: few-sample fine-tuning of BERT-type encoders suffers from too few updates
    # (Mosbach et al. 2021, "On the stability of fine-tuning BERT"; Zhang et al. 2021, "Revisiting
    # few-sample BERT fine-tuning"). 250 = 4 epochs of 64 steps at 500 labels, where on the 40/55/5
    # tweets it raised the 5% class's test F1 on 5 seeds of 5 (median +1.0) and macro-F1 on 4 (median
    # +0.8) for ~2x the training time (docs/BENCHMARKS.md, "A longer last stage with few labels").
    # From 2,000 labels (125 steps an epoch) the stage keeps its `epochs`: larger runs cost what they
    # did. Selection on validation and early stopping still apply. 0: exactly `epochs`.
    min_last_stage_steps: int = F.spec(250, ge=0)
    lr_factor: float = F.lr_factor(1.5)  # ULMFiT's 2.6 over 5 groups leaves the embeddings at lr/46; 1.5 gives lr/5
    bs: int = F.batch_size(16)  # CPU: 16 tweets x 128 pieces is a quick step, and few labels need many steps
    clip: float | None = F.clip(1.0)  # BERT fine-tuning's gradient-norm clip
    drop_mult: float = F.drop_mult(0.5)  # the head's dropouts, as the AWD-LSTM classifier's (0.4 * 0.5 on the pooled features)
    lin_sizes: tuple[int, ...] = F.lin_sizes((50,))
    schedule: str = F.schedule()
    wd: float = F.weight_decay(0.01)
    metric: str = F.metric()
    patience: int | None = F.patience(2)
    class_weights: str = F.class_weights("auto")
    min_steps_per_epoch: int = F.min_steps_per_epoch(50)
    # objective "siatl": gamma, the weight of the masked-word loss, decays per epoch (SiATL's 0.2 -> 0.1).
    gamma_start: float = F.gamma_start(0.2)
    gamma_end: float = F.gamma_end(0.1)
    gamma_epochs: int = F.gamma_epochs(15)

    BEFORE: ClassVar[dict] = {"min_last_stage_steps": 0}  # a saved run that predates the field: its value then (config.py)

    def __post_init__(self) -> None:
        F.check(self, "transformer")
        if len(self.lrs) != len(self.epochs) or not self.lrs:
            F.fail("transformer", "lrs", self.lrs, f"give one rate per stage of transformer.epochs {self.epochs}")
        if self.overlap >= self.window - 2:
            F.fail("transformer", "overlap", self.overlap, f"must be below window - 2 = {self.window - 2}")
        F.check_gamma(self, "transformer")


RECIPE = register(Recipe(
    name="transformer", section="transformer", config=TransformerTrainConfig, directions=("fwd",),
    fit=lazy("ulmfit.recipes.transformer", "fit_recipe"),
    load_model=lazy("ulmfit.recipes.transformer", "load_model"),
    load_member=lazy("ulmfit.recipes.transformer", "load_member"),
    check=lazy("ulmfit.recipes.transformer", "check_section"), lstm=False,
    summary="ULMFiT on a pretrained transformer (--backbone minilm): masked-word fine-tuning, then the classifier"))
