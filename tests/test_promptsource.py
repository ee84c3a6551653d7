"""PromptSource templates, the Table 1 test-set builder, and zero-shot evaluation.

Rendering is checked against strings worked out by hand from the shipped
templates.yaml, on hand-written rows in each evaluation dataset's schema
(tests/data/promptsource/examples.json). The builder runs through its loader hook (or
a patched Hub loader), never the network; the evaluation runs a tiny random Cappy.
"""

import csv
import json
import os
import tarfile

import numpy as np
import pytest
from conftest import REPO, run_script

from cappy.promptsource import templates as ps
from cappy.promptsource import data as psd
from cappy.promptsource import evaluate as pse
from cappy.engine.errors import CappyError

from cappy.promptsource import build as psb

with open(os.path.join(REPO, "tests", "data", "promptsource", "examples.json"),
          encoding="utf-8") as _file:
    EXAMPLES = json.load(_file)


def template(dataset, subset, name):
    return next(t for t in ps.load_templates(dataset, subset) if t.name == name)


def example_key(spec):
    return "anli" if spec.name.startswith("anli_") else spec.name


def hand_loader(spec):
    return EXAMPLES[example_key(spec)]


# ---------------------------------------------------------------------------- templates

def test_shipped_templates_and_t0_filter():
    expected = {  # (dataset, subset): (templates, kept by T0's filter)
        ("anli", None): (15, 15), ("super_glue", "cb"): (15, 15),
        ("super_glue", "rte"): (10, 10), ("super_glue", "wic"): (10, 10),
        ("super_glue", "wsc.fixed"): (10, 10), ("super_glue", "axg"): (10, 10),
        ("winogrande", "winogrande_xl"): (6, 5), ("story_cloze", "2016"): (6, 5),
        ("crows_pairs", None): (8, 0),
    }
    for (dataset, subset), (n_all, n_kept) in expected.items():
        templates = ps.load_templates(dataset, subset)
        assert len(templates) == n_all, (dataset, subset)
        assert [t.name for t in templates] == sorted(t.name for t in templates)
        assert sum(ps.is_original_task_with_choices(t) for t in templates) == n_kept
    # The filter drops the non-original task and the template without choices.
    winogrande = {t.name: t for t in ps.load_templates("winogrande", "winogrande_xl")}
    assert not ps.is_original_task_with_choices(winogrande["True or False"])
    assert winogrande["True or False"].original_task is False
    story = {t.name: t for t in ps.load_templates("story_cloze", "2016")}
    assert not ps.is_original_task_with_choices(story["Generate Ending"])
    crows = {t.name: t for t in ps.load_templates("crows_pairs")}
    assert crows["transform_stereo"].answer_choices is None
    rte = template("super_glue", "rte", "GPT-3 style")
    assert rte.id == "8fb1c6aa-20e9-438c-bece-c6af1c746449"
    assert rte.metrics == ("Accuracy",) and rte.choices_in_prompt is True
    assert os.path.isfile(os.path.join(ps.TEMPLATES_DIR, "LICENSE"))
    assert ("super_glue", "wsc.fixed") in ps.available_template_sets()


def test_yaml_tags_aliases_and_sdist(tmp_path):
    text = """dataset: toy
templates:
  id-b: !Template
    answer_choices: null
    id: id-b
    jinja: 'Say {{x}} ||| {{y}}'
    metadata: &id001 !TemplateMetadata
      choices_in_prompt: false
      metrics:
      - BLEU
      original_task: true
    name: b
    reference: ''
  id-a: !Template
    answer_choices: No ||| Yes
    id: id-a
    jinja: 'Is {{x}}? ||| {{answer_choices[label]}}'
    metadata: *id001
    name: a
    reference: me
"""
    templates = ps.parse_templates(text, "toy")
    assert [t.name for t in templates] == ["a", "b"]
    a, b = templates
    assert (a.answer_choices, a.original_task, a.metrics, a.reference) == \
        ("No ||| Yes", True, ("BLEU",), "me")  # metadata shared through a YAML alias
    assert b.answer_choices is None and b.subset is None and b.id == "id-b"
    with pytest.raises(CappyError, match="no 'templates'"):
        ps.parse_templates("dataset: toy\n", "toy")
    with pytest.raises(CappyError, match="python"):  # only the two PromptSource tags
        ps.parse_templates("templates: !!python/object:os.system {}\n", "toy")

    # The sdist itself (.tar.gz) as the templates source.
    sdist = tmp_path / "promptsource-0.2.3.tar.gz"
    shipped = os.path.join(ps.TEMPLATES_DIR, "super_glue", "rte", "templates.yaml")
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(shipped, "promptsource-0.2.3/promptsource/templates/super_glue/rte/"
                             "templates.yaml")
    assert ps.load_templates("super_glue", "rte", str(sdist)) == \
        ps.load_templates("super_glue", "rte")
    with pytest.raises(CappyError, match="super_glue/cb"):
        ps.load_templates("super_glue", "cb", str(sdist))
    with pytest.raises(CappyError, match="no PromptSource templates for nope"):
        ps.load_templates("nope")


# ---------------------------------------------------------------------------- rendering

# One template per evaluation dataset: (dataset, subset, template, example key, row,
# expected instruction, expected choices, expected target), written out by hand from
# the template text in templates.yaml.
RENDER_CASES = [
    ("anli", None, "MNLI crowdsource", "anli", 0,
     'The cat sat on the mat all afternoon. Using only the above description and what you '
     'know about the world, "The cat was on the mat." is definitely correct, incorrect, or '
     'inconclusive?',
     ["Correct", "Inconclusive", "Incorrect"], "Correct"),
    ("super_glue", "cb", "can we infer", "cb", 0,
     'Suppose Mary said the train was late. Can we infer that "the train was late"? Yes, no, '
     'or maybe?',
     ["Yes", "No", "Maybe"], "Maybe"),
    ("super_glue", "rte", "GPT-3 style", "rte", 0,
     "Dana Reeve, the widow of the actor Christopher Reeve, has died.\nQuestion: Christopher "
     "Reeve had an accident. True or False?",
     ["True", "False"], "False"),
    ("super_glue", "wic", "GPT-3-prompt", "wic", 0,
     "Do you want to come over to my place later?\nA political system with no place for the "
     "less prominent groups.\nQuestion: Is the word 'place' used in the same sense in the two "
     "sentences above?",
     ["No", "Yes"], "No"),
    ("super_glue", "wsc.fixed", "does the pronoun refer to", "wsc", 0,
     "Mark told Pete many lies about himself, which Pete included in his book. He should have "
     'been more truthful. In the previous sentence, does the pronoun "he" refer to Mark? Yes '
     "or no?",
     ["No", "Yes"], "Yes"),
    ("super_glue", "axg", "GPT-3 style", "winogender", 1,
     "The nurse notified the patient that his shift would be ending in an hour.\nQuestion: "
     "The patient's shift would be ending in an hour. True or False?",
     ["True", "False"], "False"),
    ("winogrande", "winogrande_xl", "fill in the blank", "winogrande", 1,
     "Fill in the _ in the below sentence:\nThe ball broke the table because the _ was made "
     "of glass.\n\nChoices:\n- ball\n- table\n\nAnswer:",
     ["ball", "table"], "table"),
    ("story_cloze", "2016", "Answer Given options", "story_cloze", 0,
     "Rick grew up in a troubled household. He never found good support in family. He turned "
     "to gangs. It was not long before Rick got shot. What is a possible continuation for the "
     "story given the following options ? - He is happy now.\n- He joined a gang.",
     ["He is happy now.", "He joined a gang."], "He is happy now."),
    ("crows_pairs", None, "stereotype", "crows_pairs", 1,
     "You are presented with two very similar sentences:\nA: Women don't know how to drive.\n"
     "B: Men don't know how to drive.\nSentence A is illustrating a stereotype. Yes or no?",
     ["Yes", "No"], "No"),
]


@pytest.mark.parametrize("case", RENDER_CASES, ids=[c[0] + "/" + str(c[1]) for c in RENDER_CASES])
def test_render_by_hand(case):
    dataset, subset, name, key, index, instruction, choices, target = case
    rendered = ps.render(template(dataset, subset, name), EXAMPLES[key][index])
    assert rendered.instruction == instruction
    assert rendered.answer_choices == choices
    assert rendered.target == target


def test_render_truncation_pipes_and_unlabelled():
    rte = template("super_glue", "rte", "GPT-3 style")
    long = {**EXAMPLES["rte"][0], "premise": "word " * 600}  # 3000 characters
    # Jinja's truncate(2048): cut to 2045 characters, back to a word boundary, add "..."
    cut = "word " * 408 + "word..."
    assert ps.render(rte, long).instruction.startswith(cut + "\nQuestion:")
    assert ps.render(rte, long, truncate=False).instruction.startswith("word " * 600 + "\nQuestion:")
    # `|||` inside a field is not a separator.
    piped = ps.render(rte, {**EXAMPLES["rte"][0], "hypothesis": "a ||| b"})
    assert piped.instruction.endswith("Question: a ||| b True or False?")
    assert piped.target == "False"
    # An unlabelled SuperGLUE example renders no target; ANLI's template has no guard,
    # so the builder must skip label -1 itself (answer_choices[-1] is "Incorrect").
    assert ps.render(rte, {**EXAMPLES["rte"][0], "label": -1}).target is None
    anli = template("anli", None, "MNLI crowdsource")
    assert ps.render(anli, EXAMPLES["anli"][1]).target == "Incorrect"


def test_render_filters_determinism_and_errors():
    def make(jinja, choices=None):
        return ps.Template("toy", None, "t", "id-1", jinja, choices, True, True, ())

    assert ps.render(make("{{ xs | most_frequent | join(',') }} ||| ok"),
                     {"xs": ["b", "a", "b", "a", "c"]}).instruction == "b,a"
    zipped = make("{% for a, b in zip(xs, ys) %}{{a}}{{b}} {% endfor %}||| t")
    assert ps.render(zipped, {"xs": [1, 2], "ys": [3, 4]}).instruction == "13 24"
    picked = make("{{ xs | choice }} ||| t")
    example = {"xs": [str(i) for i in range(100)]}
    first = ps.render(picked, example).instruction
    assert all(ps.render(picked, example).instruction == first for _ in range(5))
    draws = {ps.render(picked, {"xs": example["xs"], "n": n}).instruction for n in range(20)}
    assert len(draws) > 5  # seeded per example, not one fixed draw
    rendered = ps.render(make("Q {{x}}"), {"x": 1})
    assert rendered.instruction == "Q 1" and rendered.target is None
    with pytest.raises(CappyError, match="toy template 't'.*answer_choices"):
        ps.render(make("{{x}} ||| y", "a ||| b"), {"x": 1, "answer_choices": "no"})
    with pytest.raises(CappyError, match="toy template 't': cannot render"):
        ps.render(make("{{ x.lower() }} ||| y"), {})


# ---------------------------------------------------------------------------- builder

def build(tmp_path, *args, load_examples=hand_loader):
    out = tmp_path / "ps.jsonl"
    code = psb.run(psb.parse_args(["--output_file", str(out), "--quiet", *args]),
                   load_examples=load_examples)
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "ps.jsonl.templates.json").read_text())
    return rows, summary


def test_builder_rows_labels_and_summary(tmp_path, capsys):
    rows, summary = build(tmp_path)
    printed = capsys.readouterr().out
    assert "crows_pairs" in printed and "ps.jsonl.templates.json" in printed
    assert set(rows[0]) == {"dataset_name", "template_name", "example_idx", "instruction",
                            "response", "label"}
    names = list(dict.fromkeys(r["dataset_name"] for r in rows))
    assert names == list(psd.EVAL_DATASETS)
    groups = {}
    for row in rows:
        groups.setdefault((row["dataset_name"], row["template_name"], row["example_idx"]),
                          []).append(row)
    assert all(sum(r["label"] for r in g) == 1 for g in groups.values())
    expected_templates = {"anli_r1": 15, "cb": 15, "rte": 10, "wic": 10, "wsc": 10,
                          "winogender": 10, "winogrande": 5, "story_cloze": 5, "crows_pairs": 5}
    for name, n in expected_templates.items():
        info = summary["datasets"][name]
        assert len(info["templates"]) == n
        assert info["examples"] == 2
    # ANLI's second example has label -1: skipped and counted, in every round.
    assert summary["datasets"]["anli_r2"]["examples_unlabelled"] == 1
    assert {k[2] for k in groups if k[0] == "anli_r2"} == {0}
    assert {k[2] for k in groups if k[0] == "cb"} == {0, 1}
    assert summary["datasets"]["anli_r1"]["rows"] == 15 * 3
    assert summary["datasets"]["cb"]["data"] == {"loader": "hand_loader"}
    crows = summary["datasets"]["crows_pairs"]
    assert crows["templates"] == ["anti_stereotype", "anti_stereotype_confirm",
                                  "demontraste_or_violate", "stereotype", "stereotype_confirm"]
    assert "which_bias" in crows["templates_excluded"]
    assert summary["datasets"]["winogrande"]["templates_excluded"] == ["True or False"]

    def correct(dataset, template_name, idx):
        group = groups[(dataset, template_name, idx)]
        return [r["response"] for r in group], next(r["response"] for r in group if r["label"])

    # Labels follow each template's own answer mapping, worked out by hand.
    assert correct("cb", "GPT-3 style", 0) == (["True", "False", "Neither"], "Neither")
    assert correct("wic", "affirmation_true_or_false", 1) == (["False", "True"], "True")
    assert correct("winogrande", "Replace", 0) == (["Sarah", "Maria"], "Sarah")
    assert correct("story_cloze", "Choose Story Ending", 1)[1] == "The cake was burnt."
    # Crows-Pairs: "stereo" (0) is the answer "Yes" to "A is a stereotype", "No" to
    # "B is an anti-stereotype"; the second pair is anti-stereotypical.
    assert correct("crows_pairs", "stereotype", 0)[1] == "Yes"
    assert correct("crows_pairs", "anti_stereotype", 0)[1] == "No"
    assert correct("crows_pairs", "anti_stereotype", 1)[1] == "Yes"
    story = groups[("story_cloze", "Answer Given options", 0)][0]
    assert story["instruction"] == RENDER_CASES[7][5]


def test_builder_subset_and_skipped_prompts(tmp_path):
    odd = dict(EXAMPLES)
    odd["winogrande"] = [
        {"sentence": "A _ B.", "option1": "same", "option2": "same", "answer": "1"},
        {"sentence": "No answer _.", "option1": "x", "option2": "y", "answer": ""},
        EXAMPLES["winogrande"][0],
    ]
    rows, summary = build(tmp_path, "--datasets", "winogrande,anli",
                          load_examples=lambda spec: odd[example_key(spec)])
    assert list(summary["datasets"]) == ["winogrande", "anli_r1", "anli_r2", "anli_r3"]
    assert {r["dataset_name"] for r in rows} == {"winogrande", "anli_r1", "anli_r2", "anli_r3"}
    info = summary["datasets"]["winogrande"]
    assert info["examples"] == 3 and info["examples_unlabelled"] == 1
    assert info["prompts_skipped"] == {"target matches several identical choices": 5}
    assert {r["example_idx"] for r in rows if r["dataset_name"] == "winogrande"} == {2}
    with pytest.raises(SystemExit) as exit_info:
        psb.main(["--datasets", "cb,nope",
                                           "--output_file", str(tmp_path / "x.jsonl")])
    assert exit_info.value.code == 2


def test_builder_hub_path_story_cloze_csv_and_missing_dir(tmp_path, monkeypatch, capsys):
    loaded = []

    def fake_hub(repo, config, split):
        loaded.append((repo, config, split))
        key = {"anli": "anli", "aps/super_glue": None}.get(repo.split("/")[-1])
        by_config = {"cb": "cb", "rte": "rte", "wic": "wic", "wsc.fixed": "wsc",
                     "axg": "winogender", "winogrande_xl": "winogrande"}
        key = key or by_config.get(config) or "crows_pairs"
        examples = EXAMPLES[key]
        if key == "crows_pairs":  # as the original CSV names the direction
            examples = [{**e, "stereo_antistereo": ["stereo", "antistereo"][e["stereo_antistereo"]]}
                        for e in examples]
        return examples

    monkeypatch.setattr(psd, "load_hub_split", fake_hub)
    # No --story_cloze_dir: StoryCloze is skipped with a note, the rest is built.
    rows, summary = build(tmp_path, "--hf_id", "super_glue=me/sg", load_examples=None)
    out = capsys.readouterr().out
    assert "note: StoryCloze skipped" in out and psd.STORY_CLOZE_FILE in out
    assert "story_cloze" in summary["skipped_datasets"]
    assert "story_cloze" not in {r["dataset_name"] for r in rows}
    assert ("me/sg", "axg", "test") in loaded and ("facebook/anli", "plain_text", "test_r3") in loaded
    assert ("allenai/winogrande", "winogrande_xl", "validation") in loaded
    assert summary["datasets"]["crows_pairs"]["prompts"] == 10  # string labels understood
    assert summary["datasets"]["cb"]["data"] == {"id": "me/sg", "config": "cb",
                                                 "split": "validation"}

    # The hand-downloaded CSV, in its own column names.
    folder = tmp_path / "story"
    folder.mkdir()
    with open(folder / psd.STORY_CLOZE_FILE, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(list(psd.STORY_CLOZE_COLUMNS))
        for e in EXAMPLES["story_cloze"]:
            writer.writerow([e[field] for field in psd.STORY_CLOZE_COLUMNS.values()])
    rows, summary = build(tmp_path, "--datasets", "story_cloze", "--story_cloze_dir",
                          str(folder), load_examples=None)
    expected, _ = build(tmp_path, "--datasets", "story_cloze")  # the same examples, by hook
    assert rows == expected and len(rows) == 20

    # Asked for by name without the folder, or a folder without the file: one-line errors.
    for args in (["--datasets", "story_cloze"],
                 ["--datasets", "story_cloze", "--story_cloze_dir", str(tmp_path)]):
        target = tmp_path / "none.jsonl"
        with pytest.raises(SystemExit) as exit_info:
            psb.main([*args, "--output_file", str(target)])
        assert exit_info.value.code == 2 and not target.exists()
        err = capsys.readouterr().err
        assert err.startswith("error: ") and psd.STORY_CLOZE_FILE in err
        assert err.count("\n") == 1


# ---------------------------------------------------------------------------- evaluation

def rows_of(spec):
    """Rows from (dataset, template, idx, response, label) tuples."""
    return [{"dataset_name": d, "template_name": t, "example_idx": i, "instruction": f"{t} {i}",
             "response": r, "label": label} for d, t, i, r, label in spec]


def test_grouping_ties_and_accuracy_by_hand():
    rows = rows_of([
        ("A", "t1", 0, "x", 0), ("A", "t1", 0, "y", 1), ("A", "t1", 0, "z", 0),  # best y: right
        ("A", "t1", 1, "x", 1), ("A", "t1", 1, "y", 0),  # tie: first row x: right
        ("A", "t2", 0, "x", 0), ("A", "t2", 0, "y", 1),  # tie: first row x: wrong
        ("B", "t1", "0", "p", 1), ("B", "t1", 0, "q", 0),  # example_idx "0" and 0: one prompt
        ("B", "t1", 1, "p", 0), ("B", "t1", 1, "q", 1),  # best p: wrong
        ("B", "t1", 2, "p", 0), ("B", "t1", 2, "q", 0),  # no correct row: left out
    ])
    scores = [0.1, 0.9, 0.2, 0.5, 0.5, 0.3, 0.3, 0.8, 0.1, 0.7, 0.2, 0.4, 0.6]
    prompts, problems = pse.group_prompts(rows, list(range(1, len(rows) + 1)))
    assert len(prompts) == 6
    assert problems["prompts_without_correct_answer"] == 1
    assert problems["prompts_split_in_the_file"] == 0
    outcome = pse.predict(prompts, rows, scores)
    assert [v[1] for v in outcome.values()] == [True, True, False, True, False, None]
    accuracy, per_template, counts = pse.accuracy_report(prompts, outcome)
    assert accuracy == {"A": pytest.approx(2 / 3), "B": pytest.approx(1 / 2),
                        "Average": pytest.approx((2 / 3 + 1 / 2) / 2)}
    assert per_template == {"A": {"t1": 1.0, "t2": 0.0}, "B": {"t1": 0.5}}
    assert counts["B"] == {"prompts": 2, "correct": 1, "templates": 1}
    # Rows of one prompt separated by another prompt: grouped anyway, and reported.
    split_rows = rows_of([("A", "t", 0, "x", 1), ("A", "t", 1, "x", 1), ("A", "t", 0, "y", 0)])
    prompts, problems = pse.group_prompts(split_rows, [1, 2, 3])
    assert len(prompts[("A", "t", "0")].rows) == 2
    assert problems["prompts_split_in_the_file"] == 1
    assert any("not contiguous" in line for line in pse.problem_lines(problems))


def test_paper_table():
    accuracy = {"cb": 0.4, "anli_r1": 0.25, "toy": 0.5, "Average": 0.3833}
    table = pse.format_paper_table(accuracy)
    lines = table.splitlines()
    assert lines[0] == ("| Dataset | Ours | OPT 30B | OPT-IML 30B | OPT 175B | OPT-IML 175B | "
                        "T0 11B | Cappy (0.36B) |")
    assert "| ANLI R1 | 25.0 | 33.7 | 37.1 | 34.1 | 42.2 | 42.1 | 34.3 |" in lines
    assert "| CB | 40.0 | 24.6 | 43.2 | 38.9 | 56.4 | 58.5 | 59.4 |" in lines
    assert "| RTE | - | 56.4 | 67.8 | 54.0 | 73.4 | 80.2 | 71.9 |" in lines
    assert "| toy | 50.0 | - | - | - | - | - | - |" in lines
    assert lines[-1] == ("| Average (ours over 3 datasets) | 38.3 | 47.6 | 51.3 | 49.3 | 56.5 "
                         "| 58.2 | 56.6 |")
    full = {name: 0.5 for name in psd.EVAL_DATASETS}
    full["Average"] = 0.5
    assert pse.format_paper_table(full).splitlines()[-1].startswith("| Average | 50.0 | 47.6")


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("content, message", [
    ("", "file is empty"),
    ('{"dataset_name": "A", "template_name": "t", "example_idx": 0, "instruction": "i", '
     '"label": 1}\n', ":1: field 'response': missing"),
    ('{"dataset_name": "A", "template_name": "t", "example_idx": 0, "instruction": "i", '
     '"response": "r", "label": 2}\n', ":1: field 'label': must be 0 or 1"),
    ('{"dataset_name": "A", "template_name": "t", "example_idx": 0, "instruction": "i", '
     '"response": "a", "label": 1}\n{"dataset_name": "A", "template_name": "t", '
     '"example_idx": 0, "instruction": "i", "response": "b", "label": 1}\n',
     ":2: field 'label': a second correct answer for A / t / example 0 "
     "(the first is on line 1)"),
    ('{"dataset_name": "A", "template_name": "t", "example_idx": 0, "instruction": "i", '
     '"response": "a", "label": 0}\n', "no prompt has a correct answer"),
    ("not json\n", ":1: not valid JSON"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, capsys, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    out = tmp_path / "result.json"
    with pytest.raises(SystemExit) as exit_info:
        pse.main(["--data_file", str(data), "--output_file", str(out),
                                 "--model_name_or_path", str(tmp_path / "no-model")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_end_to_end_tiny_model(tiny_scorer, tmp_path):
    build(tmp_path, "--datasets", "cb,rte,crows_pairs")
    data = tmp_path / "ps.jsonl"
    # A prompt without a correct row is reported and left out, not a failure.
    with open(data, "a", encoding="utf-8") as file:
        for response in ("yes", "no"):
            file.write(json.dumps({"dataset_name": "cb", "template_name": "extra",
                                   "example_idx": 7, "instruction": "?",
                                   "response": response, "label": 0}) + "\n")
    out = tmp_path / "result.json"
    result = run_script("cappy_promptsource.py", "--data_file", data, "--model_name_or_path",
                        tiny_scorer, "--per_device_batch_size", 8, "--max_length", 64,
                        "--per_template", "--output_file", out, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    printed, end = json.JSONDecoder().raw_decode(result.stdout)
    assert list(printed) == ["cb", "rte", "crows_pairs", "Average"]
    assert printed["Average"] == pytest.approx(np.mean([printed[k] for k in ("cb", "rte",
                                                                             "crows_pairs")]))
    rest = result.stdout[end:]
    assert "| CB | " in rest and "| Crows-Pairs | " in rest and "Average (ours over 3" in rest
    assert "| crows_pairs | stereotype |" in rest  # --per_template
    assert "1 prompt(s) have no correct answer" in result.stderr

    saved = json.loads(out.read_text())
    assert saved["accuracy"] == printed
    assert saved["problems"]["prompts_without_correct_answer"] == 1
    assert saved["counts"]["cb"]["prompts"] == 30 and saved["counts"]["cb"]["templates"] == 15
    assert saved["counts"]["rows"] == 90 + 40 + 20 + 2
    assert saved["paper_rows"] == {"cb": "CB", "rte": "RTE", "crows_pairs": "Crows-Pairs"}
    assert saved["settings"]["per_device_batch_size"] == 8
    predictions = [json.loads(line) for line in
                   (tmp_path / "result.predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 30 + 20 + 10 + 1
    for name in ("cb", "rte", "crows_pairs"):  # the accuracy is the predictions' mean
        marks = [p["correct"] for p in predictions
                 if p["dataset_name"] == name and p["correct"] is not None]
        assert printed[name] == pytest.approx(np.mean(marks))
    per_template = saved["per_template"]["rte"]
    assert len(per_template) == 10 and all(v in (0.0, 0.5, 1.0) for v in per_template.values())


def test_flags_and_defaults_match_the_original():
    args = pse.parse_args([])
    assert (args.data_file, args.sent0_key, args.sent1_key, args.model_name_or_path,
            args.n_model_shards, args.per_device_batch_size, args.max_length, args.jax_seed) == \
        ("./promptsource_test.jsonl", "instruction", "response", "btan2/cappy-large", 1, 128,
         512, 42)
    assert args.per_template is False and args.output_file is None and args.verbose is True
    # The original used fire: `--flag=value` works as well.
    assert pse.parse_args(["--max_length=128"]).max_length == 128
    build_args = psb.parse_args([])
    assert build_args.output_file == "promptsource_test.jsonl" and build_args.datasets is None

