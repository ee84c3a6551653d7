"""Pretraining data (cappy/pretraining/data.py, scripts/build_pretraining_data.py).

Two hand-made datasets with hand-written PromptSource templates
(tests/data/pretraining/templates): a 2-class sentiment set whose templates have
answer choices, and a free-text QA set with one unlabelled example. Nothing is
downloaded: a loader hook hands the builder these lists.
"""

import collections
import json
import os
import sys

import pytest
from conftest import run_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from cappy.pretraining import data as pd  # noqa: E402
from cappy.engine.errors import CappyError  # noqa: E402

TEMPLATES = os.path.join(REPO, "tests", "data", "pretraining", "templates")
SENTIMENT = pd.DatasetSpec("tiny_sentiment", "sentiment", "local/tiny_sentiment")
QA = pd.DatasetSpec("tiny_qa/v1", "extractive QA", "local/tiny_qa", "v1")
SPECS = [SENTIMENT, QA]
UNLABELLED_QA = 5  # this QA example has an empty answer: both its templates are skipped


def sentiment_examples(n=40):
    return [{"text": f"review {i}: the film was {'fine' if i % 3 else 'dull'}",
             "label": int(i % 3 > 0)} for i in range(n)]


def qa_examples(n=30):
    return [{"question": f"What is item {i}?",
             "answer": "" if i == UNLABELLED_QA else f"item {i} is thing {i * 7}"}
            for i in range(n)]


DATA = {SENTIMENT.name: sentiment_examples(), QA.name: qa_examples()}


def loader(spec):
    return iter([dict(example) for example in DATA[spec.name]])


def expected_golds():
    """{instruction: (gold, dataset, template, example)} written out by hand, not rendered."""
    golds = {}
    for i, ex in enumerate(DATA[SENTIMENT.name]):
        golds[f"Review: {ex['text']}\nIs this review positive or negative?"] = (
            ["negative", "positive"][ex["label"]], SENTIMENT.name, "review_sentiment", i)
        golds[f'Did the writer like it: "{ex["text"]}"?'] = (
            ["No", "Yes"][ex["label"]], SENTIMENT.name, "liked it: yes or no", i)
    for i, ex in enumerate(DATA[QA.name]):
        if ex["answer"]:
            golds[f"Q: {ex['question']}\nA:"] = (ex["answer"], QA.name, "answer_question", i)
            golds[f'Write a question whose answer is "{ex["answer"]}".'] = (
                ex["question"], QA.name, "ask_question", i)
    return golds


def settings(**changes):
    values = dict(shard_size=25, validation_fraction=0.2, batch_examples=4, seed=7)
    values.update(changes)
    return pd.BuildSettings(**values)


def build(output_dir, load=loader, specs=SPECS, generator_loader=None, **changes):
    return pd.build_pretraining_data(str(output_dir), settings(**changes), specs=specs,
                                     loader=load, templates_dir=TEMPLATES, progress=False,
                                     generator_loader=generator_loader, log=lambda *a: None)


def read_rows(output_dir, manifest):
    rows = {}
    for split in pd.SPLITS:
        for entry in manifest["shards"][split]:
            with open(os.path.join(output_dir, entry["file"]), encoding="utf-8") as file:
                rows[entry["file"]] = [json.loads(line) for line in file]
    return rows


def shard_bytes(output_dir):
    folder = os.path.join(output_dir, pd.SHARDS_DIR)
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    manifest = build(out)
    return str(out), manifest, read_rows(str(out), manifest)


# ---------------------------------------------------------------------------- the table


def test_t0_mixture_table_is_complete_shipped_and_never_held_out():
    from cappy.promptsource.templates import load_templates

    specs = pd.T0_TRAINING_DATASETS
    assert len(specs) == 38 and len({spec.name for spec in specs}) == 38
    # the T0 paper's 35 datasets: adversarial_qa has 3 subsets here, duorc 2
    assert len({spec.templates_dataset for spec in specs} - {"glue"}) + 2 == 35
    assert {spec.category for spec in specs} == set(pd.T0_CATEGORIES)
    assert pd.resolve_specs() == list(specs)
    # Every dataset's templates are shipped with the package, 313 in all.
    assert sum(len(load_templates(spec.templates_dataset, spec.templates_subset))
               for spec in specs) == 313
    for name in ("anli", "super_glue/cb", "super_glue/rte", "super_glue/wic",
                 "super_glue/wsc.fixed", "super_glue/axg", "winogrande/winogrande_xl",
                 "story_cloze/2016", "crows_pairs", "glue/rte"):
        dataset, _, subset = name.partition("/")
        assert pd.held_out_reason(dataset, subset or None), name
    assert pd.held_out_reason("facebook/anli") and pd.held_out_reason("aps/super_glue", "rte")
    assert not pd.held_out_reason("nyu-mll/glue", "mrpc")
    assert pd.parse_source("samsum:Summarize this dialogue::augment/T0_3B") == \
        ("samsum", "Summarize this dialogue:", "augment/T0_3B")


def test_held_out_and_unknown_datasets_are_refused():
    with pytest.raises(CappyError, match="held out.*RTE"):
        pd.resolve_specs("glue/mrpc,super_glue/rte")
    with pytest.raises(CappyError, match="held out.*Winogrande"):
        pd.resolve_specs("winogrande/winogrande_xl")
    with pytest.raises(CappyError, match="held out.*ANLI"):  # an added dataset, by hub id
        pd.apply_overrides(pd.T0_TRAINING_DATASETS, {"my_nli": {"hf_path": "facebook/anli"}})
    with pytest.raises(CappyError, match="unknown dataset 'glu/mrpc'"):
        pd.resolve_specs("glu/mrpc")
    with pytest.raises(CappyError, match="unknown field"):
        pd.apply_overrides(pd.T0_TRAINING_DATASETS, {"imdb": {"path": "x/imdb"}})
    changed = pd.apply_overrides(pd.T0_TRAINING_DATASETS,
                                 {"imdb": {"hf_path": "me/imdb", "renames": {"txt": "text"}}})
    imdb = [spec for spec in changed if spec.name == "imdb"][0]
    assert imdb.hf_path == "me/imdb" and imdb.renames == (("txt", "text"),)
    assert [spec.name for spec in pd.resolve_specs("adversarial_qa", changed)] == [
        "adversarial_qa/dbidaf", "adversarial_qa/dbert", "adversarial_qa/droberta"]


def test_script_fails_in_one_line_on_a_held_out_dataset(tmp_path):
    result = run_script("scripts/build_pretraining_data.py", "--datasets", "super_glue/cb",
                        "--output_dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --datasets: super_glue/cb is held out: the zero-shot evaluation uses it (CB)"]
    assert not (tmp_path / "out").exists()
    listing = run_script("scripts/build_pretraining_data.py", "--list_datasets")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert lines[-1] == "38 datasets, 313 templates"
    assert lines[0].split()[:3] == ["cos_e/v1.11", "11", "multiple-choice"]


# ---------------------------------------------------------------------------- rows


def test_gold_choice_and_mismatched_rows(built):
    _, manifest, rows_by_file = built
    golds = expected_golds()
    rows = [row for rows in rows_by_file.values() for row in rows]
    by_instruction = collections.defaultdict(list)
    for row in rows:
        assert set(row) == {"instruction", "response", "label", "source"}
        assert isinstance(row["label"], float) and 0.0 <= row["label"] <= 1.0
        by_instruction[row["instruction"]].append(row)
    # Every (example, template) with a target has rows; the unlabelled example has none.
    assert set(by_instruction) == set(golds)
    assert not any(f"item {UNLABELLED_QA}?" in text for text in by_instruction)
    qa_golds_by_template = collections.defaultdict(set)
    for gold, dataset, template, _ in golds.values():
        if dataset == QA.name:
            qa_golds_by_template[template].add(gold)
    n_mismatched = 0
    for instruction, group in by_instruction.items():
        gold, dataset, template, _ = golds[instruction]
        kinds = [pd.parse_source(row["source"]) for row in group]
        assert all(k[:2] == (dataset, template) for k in kinds)
        assert [(row["response"], row["label"]) for row, k in zip(group, kinds)
                if k[2] == "gold"] == [(gold, 1.0)]
        assert group[0]["response"] == gold  # the gold comes first
        assert len({row["response"] for row in group}) == len(group)  # no repeats
        if dataset == SENTIMENT.name:
            # two answer choices: exactly the other one, labelled 0
            assert sorted(k[2] for k in kinds) == ["choice", "gold"]
            choices = {"review_sentiment": {"negative", "positive"},
                       "liked it: yes or no": {"No", "Yes"}}[template]
            assert [row["response"] for row in group if row["label"] == 0.0] == \
                list(choices - {gold})
        else:
            mismatched = [row for row, k in zip(group, kinds) if k[2] == "mismatch"]
            assert len(mismatched) <= 1 and len(group) == 1 + len(mismatched)
            for row in mismatched:
                assert row["label"] == 0.0 and row["response"] != gold
                # a target of another example of the same dataset and template
                assert row["response"] in qa_golds_by_template[template]
            n_mismatched += len(mismatched)
    assert n_mismatched >= 0.8 * sum(len(g) for g in qa_golds_by_template.values())


def test_validation_split_keeps_every_row_of_an_example_together(built):
    _, manifest, rows_by_file = built
    golds = expected_golds()
    split_of_example = collections.defaultdict(set)
    for file, rows in rows_by_file.items():
        split = os.path.basename(file).split("-")[0]
        for row in rows:
            _, dataset, _, example = golds[row["instruction"]]
            split_of_example[(dataset, example)].add(split)
    assert all(len(splits) == 1 for splits in split_of_example.values())
    n_validation = sum(splits == {"validation"} for splits in split_of_example.values())
    assert 0 < n_validation < len(split_of_example) / 2
    # The same examples go to validation whatever the seed or shard size.
    assert [pd.example_split("d", {"a": i}, 0.2) for i in range(50)] == \
        [pd.example_split("d", {"a": i}, 0.2) for i in range(50)]
    assert {pd.example_split("d", {"a": i}, 0.0) for i in range(50)} == {"train"}


def test_shards_manifest_and_counts(built):
    out, manifest, rows_by_file = built
    assert manifest["complete"] and manifest == pd.read_manifest(out)
    for split in pd.SPLITS:
        entries = manifest["shards"][split]
        assert [entry["file"] for entry in entries] == [
            f"shards/{split}-{index:05d}.jsonl" for index in range(len(entries))]
        by_dataset = collections.defaultdict(list)
        for entry in entries:
            rows = rows_by_file[entry["file"]]
            assert entry["rows"] == len(rows) > 0
            assert {pd.parse_source(row["source"])[0] for row in rows} == {entry["dataset"]}
            by_dataset[entry["dataset"]].append(entry)
        for dataset, group in by_dataset.items():
            # consecutive example slices; every shard but the last reaches shard_size,
            # and only its last example takes it there
            assert group[0]["first_example"] == 0
            assert all(a["end_example"] == b["first_example"] for a, b in zip(group, group[1:]))
            assert group[-1]["end_example"] == manifest["datasets"][dataset][split]["examples"]
            for entry in group[:-1]:
                assert entry["rows"] >= 25 and entry["rows"] - 4 < 25  # <= 4 rows an example
    assert sorted(os.listdir(os.path.join(out, pd.SHARDS_DIR))) == sorted(
        os.path.basename(file) for file in rows_by_file)

    counted = {}
    for rows in rows_by_file.values():
        for row in rows:
            dataset, _, kind = pd.parse_source(row["source"])
            part = counted.setdefault(dataset, {"rows": 0, "kinds": collections.Counter(),
                                                "labels": collections.Counter()})
            part["rows"] += 1
            part["kinds"][kind] += 1
            part["labels"][pd.label_bucket(row["label"])] += 1
    for dataset, part in counted.items():
        counts = manifest["counts"][dataset]
        assert counts["rows"] == part["rows"]
        assert counts["kinds"] == dict(part["kinds"])
        assert counts["labels"] == dict(part["labels"])
    assert manifest["counts"][SENTIMENT.name]["kinds"] == {"gold": 80, "choice": 80}
    qa = manifest["counts"][QA.name]
    assert qa["examples"] == 30 and qa["pairs"] == 58 and qa["skipped_pairs"] == 2
    assert qa["templates"] == {"answer_question": 29, "ask_question": 29}
    assert manifest["totals"] == {split: sum(e["rows"] for e in manifest["shards"][split])
                                  for split in pd.SPLITS}
    assert [pd.label_bucket(x) for x in (0.0, 0.1, 0.25, 0.6, 0.99, 1.0)] == \
        ["0", "(0,0.25)", "[0.25,0.5)", "[0.5,0.75)", "[0.75,1)", "1"]


def test_cap_and_a_dataset_subset(tmp_path):
    manifest = build(tmp_path, specs=SPECS, max_examples_per_dataset=10)
    assert {name: counts["examples"] for name, counts in manifest["counts"].items()} == \
        {SENTIMENT.name: 10, QA.name: 10}
    only = pd.build_pretraining_data(
        str(tmp_path / "only"), settings(), datasets="tiny_qa", specs=SPECS, loader=loader,
        templates_dir=TEMPLATES, progress=False)
    assert list(only["counts"]) == [QA.name]


# ---------------------------------------------------------------------------- resume


def test_resume_after_a_crash_and_a_deleted_shard_is_byte_identical(built, tmp_path):
    reference_dir, reference, _ = built
    out = str(tmp_path / "resumed")

    def crashing_loader(spec):
        for i, example in enumerate(loader(spec)):
            if spec.name == QA.name and i == 17:
                raise RuntimeError("simulated crash")
            yield example

    with pytest.raises(RuntimeError, match="simulated crash"):
        build(out, load=crashing_loader)
    partial = pd.read_manifest(out)
    assert not partial["complete"]
    listed = {entry["file"] for split in pd.SPLITS for entry in partial["shards"][split]}
    on_disk = {f"shards/{name}" for name in os.listdir(os.path.join(out, pd.SHARDS_DIR))}
    assert listed == on_disk  # no half-written or unlisted shard
    assert any(pd.parse_source(json.loads(open(os.path.join(out, f)).readline())["source"])[0]
               == QA.name for f in listed)  # the crash came after some QA shards
    assert partial["datasets"][QA.name]["train"]["complete"] is False

    deleted = "shards/train-00001.jsonl"
    os.remove(os.path.join(out, deleted))
    kept = {f: os.stat(os.path.join(out, f)) for f in listed if f != deleted}
    # what a killed process leaves: cappy.engine.io's temporary file of an unfinished shard
    stale = os.path.join(out, pd.SHARDS_DIR, ".train-00009.jsonl.x1y2.tmp")
    with open(stale, "w") as file:
        file.write('{"half": ')
    seen = collections.Counter()
    calls = []

    def counting_loader(spec):
        calls.append(spec.name)

        def examples():
            for example in loader(spec):
                seen[spec.name] += 1
                yield example
        return examples()

    manifest = build(out, load=counting_loader)
    assert not os.path.exists(stale)
    # the finished dataset is read only as far as its missing shard (and one batch) needs
    assert seen[SENTIMENT.name] < len(DATA[SENTIMENT.name]) / 2
    assert shard_bytes(out) == shard_bytes(reference_dir)
    assert manifest["shards"] == reference["shards"]
    assert manifest["counts"] == reference["counts"]
    for file, before in kept.items():  # complete shards were not written again
        after = os.stat(os.path.join(out, file))
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # A finished build with every shard present loads nothing at all.
    calls.clear()
    again = build(out, load=counting_loader)
    assert calls == [] and again["shards"] == reference["shards"]


def test_resume_refuses_other_settings_and_bad_input(built, tmp_path):
    reference_dir, _, _ = built
    with pytest.raises(CappyError, match="other settings.*n_mismatched"):
        build(reference_dir, n_mismatched=2)
    with pytest.raises(CappyError, match="shard_size must be at least 1"):
        build(tmp_path / "a", shard_size=0)
    with pytest.raises(CappyError, match="no examples"):
        build(tmp_path / "b", load=lambda spec: iter([]))
    with pytest.raises(CappyError, match="no template rendered a target"):
        build(tmp_path / "c", specs=[QA], load=lambda spec: iter([{"q": "x", "a": "y"}] * 3))
    with pytest.raises(CappyError, match="no PromptSource templates for nothing_here"):
        build(tmp_path / "d", specs=[pd.DatasetSpec("nothing_here", "x", "local/x")])


# ---------------------------------------------------------------------------- augmentation


def test_augmented_rows_are_labelled_by_rouge_l(tmp_path, monkeypatch):
    """A stand-in generator gives responses that overlap the gold partly, fully or not."""
    from rouge_score import rouge_scorer

    calls = []

    def fake_sample(generator, instructions, decodings, n_samples):
        calls.append((generator, len(instructions), tuple(decodings), n_samples))
        golds = expected_golds()
        out = []
        for instruction in instructions:
            gold = golds[instruction][0]
            out.append([gold, gold.split(" ")[0] + " something else", " ", "unrelated words",
                        "unrelated words"])
        return out

    class StubGenerator:
        def __init__(self, model):
            self.model = model
            self.seeds = []

        def reseed(self, seed, name):
            self.seeds.append((seed, name))

    stubs = []

    def load_stub(model, build_settings):
        stubs.append(StubGenerator(model))
        return stubs[-1]

    monkeypatch.setattr(pd, "sample_responses", fake_sample)
    manifest = build(tmp_path, specs=[QA], augment_models=("some/gen-a", "gen-b"),
                     augment_decodings=("topk40",), augment_samples=3,
                     generator_loader=load_stub)
    assert [stub.model for stub in stubs] == ["some/gen-a", "gen-b"]  # loaded once each
    assert {c[2:] for c in calls} == {(("topk40",), 3)}
    # every batch of every shard is sampled from its own seed, per generator
    assert len(calls) == sum(len(stub.seeds) for stub in stubs)
    assert len({name for stub in stubs for _, name in stub.seeds}) == len(calls)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    golds = expected_golds()
    augmented = collections.Counter()
    for rows in read_rows(str(tmp_path), manifest).values():
        seen = set()
        for row in rows:
            assert (row["instruction"], row["response"]) not in seen
            seen.add((row["instruction"], row["response"]))
            kind = pd.parse_source(row["source"])[2]
            if kind.startswith("augment/"):
                augmented[kind] += 1
                gold = golds[row["instruction"]][0]
                assert row["response"] not in (gold, "", " ")
                assert row["label"] == pytest.approx(
                    scorer.score(gold, row["response"])["rougeL"].fmeasure, abs=1e-12)
    labels = manifest["counts"][QA.name]["labels"]
    assert labels.get("[0.25,0.5)", 0) + labels.get("[0.5,0.75)", 0) > 0  # partial overlap
    # one partial and one unrelated response per pair for the first model; the second
    # model's responses repeat the first's, so they are skipped
    assert augmented == {"augment/gen-a": 2 * 58}


def test_augmentation_with_a_tiny_t5_is_labelled_and_reproducible(tiny_t5, tmp_path):
    from rouge_score import rouge_scorer

    from cappy.engine.jobs.candidate_generation import CandidateGenerator

    generator = CandidateGenerator(tiny_t5, n_sample_gens=2, per_device_batch_size=4,
                                   max_src_len=32, max_tgt_len=8, dtype="float32",
                                   verbose=False)
    small = {QA.name: qa_examples(10)}

    def small_loader(spec):
        return iter([dict(example) for example in small[spec.name]])

    outputs = []
    for name in ("a", "b"):
        manifest = build(tmp_path / name, load=small_loader, specs=[QA],
                         augment_models=(tiny_t5,), augment_decodings=("topp0.95",),
                         augment_samples=2, generator_loader=lambda model, s: generator)
        outputs.append(shard_bytes(str(tmp_path / name)))
    assert outputs[0] == outputs[1]  # reseeded per batch: the same rows again
    kind = "augment/" + os.path.basename(tiny_t5)
    assert manifest["counts"][QA.name]["kinds"].get(kind, 0) > 0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    golds = expected_golds()
    for rows in read_rows(str(tmp_path / "b"), manifest).values():
        per_instruction = collections.Counter()
        for row in rows:
            if pd.parse_source(row["source"])[2] != kind:
                continue
            per_instruction[row["instruction"]] += 1
            gold = golds[row["instruction"]][0]
            assert row["response"] and row["response"] != gold
            assert row["label"] == pytest.approx(
                scorer.score(gold, row["response"])["rougeL"].fmeasure, abs=1e-12)
        assert all(n <= 2 for n in per_instruction.values())  # 2 samples, repeats dropped


def test_trec_classes_are_converted_by_name_for_the_shipped_templates():
    """CogComp/trec reordered and renamed its classes; the templates index the old order."""
    import datasets

    from cappy.promptsource.templates import load_templates, render

    coarse = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    fine = ["ABBR:abb", "ABBR:exp"] + [f"ENTY:{name}" for name in (
        "animal body color cremat currency dismed event food instru lang letter other plant "
        "product religion sport substance symbol techmeth termeq veh word").split()] + \
        [f"DESC:{name}" for name in "def desc manner reason".split()] + \
        [f"HUM:{name}" for name in "gr ind title desc".split()] + \
        [f"LOC:{name}" for name in "city country mount other state".split()] + \
        [f"NUM:{name}" for name in ("code count date dist money ord other perc period speed "
                                    "temp volsize weight").split()]
    assert len(fine) == 50
    features = datasets.Features({"text": datasets.Value("string"),
                                  "coarse_label": datasets.ClassLabel(names=coarse),
                                  "fine_label": datasets.ClassLabel(names=fine)})
    trec = [spec for spec in pd.T0_TRAINING_DATASETS if spec.name == "trec"][0]
    maps = pd.relabel_maps(trec, features)
    templates = {template.name: template for template in load_templates("trec")}

    def targets(coarse_name, fine_name, *names):
        hub = {"text": "Which city is the capital of France?",
               "coarse_label": coarse.index(coarse_name), "fine_label": fine.index(fine_name)}
        example = pd.adapt_example(trec, pd.relabel_example(hub, maps))
        return [render(templates[name], example).target for name in names]

    assert targets("LOC", "LOC:city", "trec1", "fine_grained_LOC", "fine_grained_open") == \
        ["Location", "city", "City"]
    assert targets("NUM", "NUM:money", "trec1", "fine_grained_NUM") == ["Quantity", "price"]
    assert targets("ABBR", "ABBR:exp", "fine_grained_ABBR", "fine_grained_LOC") == \
        ["expression abbreviated", None]  # the LOC template has no target for ABBR
    assert targets("NUM", "NUM:other", "fine_grained_NUM") == ["other number"]
    with pytest.raises(CappyError, match="class 'LOC:moon'"):
        pd.relabel_maps(trec, datasets.Features(
            {"coarse_label": datasets.ClassLabel(names=coarse),
             "fine_label": datasets.ClassLabel(names=fine[:-1] + ["LOC:moon"])}))
    with pytest.raises(CappyError, match="no class names"):
        pd.relabel_maps(trec, None)


def test_default_loader_streams_a_local_dataset_and_converts_trec_classes(tmp_path):
    """The hub loader's code path, offline: a local parquet folder with TREC's new classes."""
    import dataclasses

    import datasets

    coarse = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    fine = ["ABBR:exp", "LOC:city", "NUM:money"]  # any order: classes are matched by name
    features = datasets.Features({"text": datasets.Value("string"),
                                  "coarse_label": datasets.ClassLabel(names=coarse),
                                  "fine_label": datasets.ClassLabel(names=fine)})
    rows = [("What does NASA stand for?", "ABBR", "ABBR:exp"),
            ("Which city is the capital of France?", "LOC", "LOC:city"),
            ("How much does a stamp cost?", "NUM", "NUM:money")]
    folder = tmp_path / "trec_like"
    folder.mkdir()
    datasets.Dataset.from_dict(
        {"text": [text for text, _, _ in rows],
         "coarse_label": [coarse.index(c) for _, c, _ in rows],
         "fine_label": [fine.index(f) for _, _, f in rows]},
        features=features).to_parquet(str(folder / "train.parquet"))
    trec = [spec for spec in pd.T0_TRAINING_DATASETS if spec.name == "trec"][0]
    spec = dataclasses.replace(trec, hf_path=str(folder))
    manifest = pd.build_pretraining_data(str(tmp_path / "out"), settings(validation_fraction=0),
                                         specs=[spec], progress=False, log=lambda *a: None)
    golds = collections.defaultdict(list)
    for shard_rows in read_rows(str(tmp_path / "out"), manifest).values():
        for row in shard_rows:
            _, template, kind = pd.parse_source(row["source"])
            if kind == "gold":
                golds[template].append(row["response"])
    assert golds["trec1"] == ["Abbreviation", "Location", "Quantity"]
    assert golds["fine_grained_open"] == ["Expression abbreviated", "City", "Price"]
    assert golds["fine_grained_LOC"] == ["city"] and golds["fine_grained_NUM"] == ["price"]
    assert manifest["counts"]["trec"]["examples"] == 3
    # Never written inside a local source folder: the next build would read it back.
    with pytest.raises(CappyError, match=r"--output_dir .*: inside trec's local source folder"):
        pd.build_pretraining_data(str(folder / "out"), settings(validation_fraction=0),
                                  specs=[spec], progress=False, log=lambda *a: None)
    assert sorted(os.listdir(folder)) == ["train.parquet"]
