"""A tiny random BERT (2 layers, hidden 32, a 100-odd word-piece vocabulary) saved as a local
Hugging Face model folder, so transformer tests run in seconds without the real MiniLM."""
from __future__ import annotations

from pathlib import Path

WORDS = ("the a an is was good bad great awful love hate movie film plot actor fun boring happy sad "
         "not very really i you it this that and but so flight delay crew seat late on time thanks "
         "service ok fine terrible best worst ever again wonderful excellent nice awful rude delayed gate schedule "
         "boston monday tomorrow my today at with we").split()


def make_tiny_bert(folder: Path, seed: int = 0, max_positions: int = 64) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz!?.,'")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(folder))
    return folder
