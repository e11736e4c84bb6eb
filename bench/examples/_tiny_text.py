"""A tiny text world for the sentence-transformers example and tests: word pairs that mean the same, sentences
and their paraphrases (every word swapped for its synonym), and a randomly initialised one-layer BERT with a
word-level tokenizer, built locally (no download)."""

import torch

SYNONYMS = (
    ("cat", "kitten"), ("dog", "puppy"), ("bird", "sparrow"), ("fish", "trout"), ("sat", "rested"),
    ("ran", "sprinted"), ("flew", "soared"), ("swam", "paddled"), ("big", "large"), ("small", "tiny"),
    ("red", "crimson"), ("blue", "azure"), ("mat", "rug"), ("tree", "oak"), ("sky", "heavens"), ("sea", "ocean"),
    ("fast", "quickly"), ("slow", "sluggish"), ("old", "aged"), ("young", "youthful"),
)  # fmt: skip
WORDS = tuple(word for pair in SYNONYMS for word in pair)


def paraphrase_pairs(count, words_per_sentence, seed):
    """``count`` (sentence, paraphrase) pairs: random words, then each replaced by its synonym."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(SYNONYMS), (count, words_per_sentence), generator=generator).tolist()
    first = [" ".join(SYNONYMS[k][0] for k in row) for row in picks]
    second = [" ".join(SYNONYMS[k][1] for k in row) for row in picks]
    return first, second


def tiny_sentence_transformer(directory, dim=32, seed=0):
    """A randomly initialised one-layer BERT with a word-level tokenizer over ``WORDS``, saved in ``directory``
    and loaded as a SentenceTransformer with mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=dim, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * dim,
        max_position_embeddings=32,
    )  # fmt: skip
    BertModel(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return SentenceTransformer(modules=[modules.Transformer(str(directory)), modules.Pooling(dim)], device="cpu")
