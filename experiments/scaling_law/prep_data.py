#!/usr/bin/env python3
"""Stage 1 (this machine, CPU): build the corpus, train the SentencePiece model, write token files.

Sources are Debian packages (see prep_data.sh): KJV Bible (bible-kjv), five Jane Austen novels
(r-cran-janeaustenr; read with Rscript), the Python 3.11 docs (python3.11-doc, reST sources) and
the Perl docs (perl-doc, .pod). Emma is held out whole: it is never seen by the tokenizer training
or by any training step, and is the only evaluation text.

Outputs in experiments/scaling_law/data/:
  tokenizer.model / tokenizer.vocab   SentencePiece (unigram, vocab 4096, byte fallback)
  train.u16     uint16 token stream of all training documents, BOS(1) before each document
  val.u16       the last 1% of the training stream's documents (loss monitoring during training)
  emma.u16      the held-out novel (uint16), BOS first
  emma.npy      the same ids as int32 .npy (what `ropex perplexity --tokens` reads)
  meta.json     counts and sources
"""
import glob, json, os, random, re, subprocess, sys, tempfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
VOCAB = 4096
HELD_OUT = "emma"
NOVELS = ["persuasion", "prideprejudice", "sensesensibility", "mansfieldpark", "northangerabbey", "emma"]


def austen():
    """Each novel as one string (janeaustenr stores novels as vectors of printed lines)."""
    out = {}
    with tempfile.TemporaryDirectory() as td:
        for n in NOVELS:
            path = os.path.join(td, n + ".txt")
            subprocess.run(["Rscript", "-e", f"library(janeaustenr); writeLines({n}, '{path}')"],
                           check=True, capture_output=True)
            with open(path, encoding="utf-8") as f:
                out[n] = f.read()
    return out


def bible():
    """KJV, one document per book; verse numbers dropped so it reads as prose."""
    txt = subprocess.run(["bible", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                         text=True).stdout
    txt = re.sub(r"(?m)^\s*\d+ ", "", txt)
    books = re.split(r"\n(?=[1-3]?\s?[A-Z][a-z]+(?: of [A-Z][a-z]+)? 1\n)", txt)
    return [b.strip() for b in books if len(b.strip()) > 100]


def files(pattern):
    docs = []
    for p in sorted(glob.glob(pattern, recursive=True)):
        with open(p, encoding="utf-8", errors="replace") as f:
            t = f.read()
        if len(t) > 200:
            docs.append(t)
    return docs


def encode(sp_model, docs):
    """Token ids of each document via Debian's spm_encode (one line per input line)."""
    ids = []
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        name = f.name
        for d in docs:
            # one document per line: newlines inside a document become a visible marker the
            # tokenizer learns as an ordinary piece, so line structure survives tokenization
            f.write(d.replace("\n", " \u2581NL ").replace("\r", "") + "\n")
    r = subprocess.run(["spm_encode", f"--model={sp_model}", "--output_format=id", name],
                       check=True, capture_output=True, text=True)
    os.unlink(name)
    for line in r.stdout.splitlines():
        ids.append([1] + [int(t) for t in line.split()])  # BOS = 1 before every document
    assert len(ids) == len(docs), (len(ids), len(docs))
    return ids


def main():
    os.makedirs(DATA, exist_ok=True)
    nov = austen()
    train_docs = [nov[n] for n in NOVELS if n != HELD_OUT]
    train_docs += bible()
    train_docs += files("/usr/share/doc/python3.11/html/_sources/**/*.rst.txt")
    train_docs += files("/usr/share/perl/*/pod/*.pod")
    random.Random(0).shuffle(train_docs)
    n_val = max(1, len(train_docs) // 100)
    val_docs, train_docs = train_docs[:n_val], train_docs[n_val:]

    # SentencePiece trains on lines; feed it the training documents only (never Emma)
    corpus = os.path.join(DATA, "spm_corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for d in train_docs:
            for line in d.split("\n"):
                if line.strip():
                    f.write(line.strip() + "\n")
    prefix = os.path.join(DATA, "tokenizer")
    subprocess.run(["spm_train", f"--input={corpus}", f"--model_prefix={prefix}",
                    f"--vocab_size={VOCAB}", "--model_type=unigram", "--character_coverage=1.0",
                    "--byte_fallback=true", "--input_sentence_size=1000000",
                    "--shuffle_input_sentence=true", "--num_threads=2",
                    "--user_defined_symbols=\u2581NL", "--minloglevel=1"],
                   check=True)
    os.unlink(corpus)
    model = prefix + ".model"

    train = np.concatenate([np.asarray(x, np.uint16) for x in encode(model, train_docs)])
    val = np.concatenate([np.asarray(x, np.uint16) for x in encode(model, val_docs)])
    emma = np.asarray(encode(model, [nov[HELD_OUT]])[0], np.int64)
    assert train.max() < VOCAB and emma.max() < VOCAB
    train.tofile(os.path.join(DATA, "train.u16"))
    val.tofile(os.path.join(DATA, "val.u16"))
    emma.astype(np.uint16).tofile(os.path.join(DATA, "emma.u16"))
    np.save(os.path.join(DATA, "emma.npy"), emma.astype(np.int32))
    meta = {"vocab_size": VOCAB, "held_out": HELD_OUT, "train_tokens": int(train.size),
            "val_tokens": int(val.size), "emma_tokens": int(emma.size),
            "train_documents": len(train_docs), "val_documents": len(val_docs),
            "train_chars": sum(len(d) for d in train_docs), "emma_chars": len(nov[HELD_OUT])}
    with open(os.path.join(DATA, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
