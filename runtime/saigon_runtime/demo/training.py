"""Training the demo base model and its LoRA adapters with plain torch on the CPU."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE_INDEX = -100
DEFAULT_TOP_P = 0.9
# At temperature 1 a model this small can draw its end of sequence first after a prompt that reads
# like a finished answer ("Summarize your week."); shipped as Hugging Face's min_new_tokens.
MIN_NEW_TOKENS = 8
_SORT_WINDOW = 16  # batches per window sorted by length, to cut padding


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_positions: int = 512


@dataclass(frozen=True)
class TrainPlan:
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 10
    weight_decay: float = 0.01


def base_model(shape: ModelShape, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        head_dim=shape.hidden_size // shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    # The sampling default the model ships (the runtime applies it, as vLLM does, to requests that
    # do not set top_p): a model this small keeps a long flat tail of unlikely tokens, and one of
    # them drawn at temperature 1 derails the answer.
    model.generation_config.do_sample = True
    model.generation_config.top_p = DEFAULT_TOP_P
    model.generation_config.min_new_tokens = MIN_NEW_TOKENS
    return model


def lora_model(base: LlamaForCausalLM, rank: int, seed: int) -> PeftModel:
    """Wrap `base` (modified in place) with one fresh LoRA adapter on every projection."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # PEFT 0.21 calls a transformers method that 5.x marks deprecated; nothing for us to do.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(base, config)
    assert isinstance(model, PeftModel)
    return model


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, ended by EOS so the model learns where an answer stops."""
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    return [[*ids, eos] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def collate(sequences: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batches(sequences: Sequence[list[int]], batch_size: int, seed: int) -> Iterator[list[list[int]]]:
    """Endless shuffled batches of similar-length sequences."""
    rng = random.Random(seed)
    order = list(range(len(sequences)))
    while True:
        rng.shuffle(order)
        window = batch_size * _SORT_WINDOW
        epoch: list[list[list[int]]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(sequences[i]))
            epoch += [[sequences[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        yield from epoch


def train(
    model: torch.nn.Module,
    sequences: Sequence[list[int]],
    plan: TrainPlan,
    pad_id: int,
    seed: int,
    description: str,
    progress: bool = True,
) -> float:
    """Train the parameters of `model` that require grad; returns the mean loss of the last steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(plan))
    model.train()
    recent: list[float] = []
    stream = batches(sequences, plan.batch_size, seed)
    with tqdm(total=plan.steps, desc=description, disable=not progress, unit="step", leave=False) as bar:
        for _ in range(plan.steps):
            loss = model(**collate(next(stream), pad_id)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            recent = [*recent[-9:], loss.item()]
            bar.set_postfix(loss=f"{recent[-1]:.3f}")
            bar.update()
    model.eval()
    return sum(recent) / max(len(recent), 1)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, sequences: Sequence[list[int]], pad_id: int, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy over every real token of `sequences`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = collate(sequences[start : start + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += float(losses)
        count += int((targets != IGNORE_INDEX).sum())
    return total / max(count, 1)


def _warmup_cosine(plan: TrainPlan) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < plan.warmup_steps:
            return (step + 1) / plan.warmup_steps
        progress = (step - plan.warmup_steps) / max(plan.steps - plan.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
