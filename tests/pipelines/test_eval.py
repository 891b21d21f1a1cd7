import json

from typer.testing import CliRunner

from ragglm.cli import app
from ragglm.pipelines.eval import contains_answer, load_qa, normalize_answer


def _squad(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "Pumps", "paragraphs": [
        {"context": "The AquaPure W3 filter lasts six months. Error code E2 means a leak was detected.",
         "qas": [{"question": "How long does the AquaPure W3 filter last?", "id": "q1", "is_impossible": False,
                  "answers": [{"text": "six months", "answer_start": 29}]},
                 {"question": "What colour is the AquaPure W3 pump housing?", "id": "q2", "is_impossible": True,
                  "answers": []}]},
        {"context": "The SmartLock S2 battery lasts one year. Hold the button for ten seconds to reset it.",
         "qas": [{"question": "How long does the SmartLock S2 battery last?", "id": "q3",
                  "answers": [{"text": "one year", "answer_start": 32}]}]}]}]}
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_loads_squad_and_jsonl(tmp_path):
    qa = load_qa(_squad(tmp_path))
    assert [i.answerable for i in qa.items] == [True, False, True]
    assert qa.items[0].answers == ["six months"] and len(qa.contexts) == 2
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text('{"question": "Q1?", "answers": ["a"], "context": "c a"}\n'
                     '{"question": "Q2?", "answer": "b"}\n\n{"question": "Q3?"}\n', encoding="utf-8")
    qa = load_qa(jsonl)
    assert [i.answers for i in qa.items] == [["a"], ["b"], []] and list(qa.contexts.values()) == ["c a"]


def test_containment_normalizes_case_punctuation_articles_and_cjk_spaces():
    assert contains_answer("It lasts Six Months [1].", ["six months"])
    assert not contains_answer("It lasts sixty months.", ["six"])
    assert contains_answer("答案是 踢 爆 【1】", ["踢爆"])
    assert normalize_answer("The  Normans, [2]") == "normans"


def test_eval_command_scores_a_qa_file(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--qa", str(_squad(tmp_path)), "--mode", "extractive", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["questions"] == 3 and report["answerable"] == 2 and report["unanswerable"] == 1
    assert report["containment"] == 1.0 and report["citation_correctness"] == 1.0
    assert report["modes"] == {"extractive": 3}
    limited = CliRunner().invoke(app, ["eval", "--qa", str(_squad(tmp_path)), "--mode", "extractive",
                                       "--limit", "1", "--json"])
    assert json.loads(limited.output.strip().splitlines()[-1])["questions"] == 1


def test_a_missing_or_malformed_qa_file_is_an_error_naming_it(tmp_path):
    import pytest

    from ragglm.errors import SourceError

    with pytest.raises(SourceError, match="nowhere.json: cannot read the QA file") as missing:
        load_qa(tmp_path / "nowhere.json")
    assert missing.value.fix == "check the path"
    (tmp_path / "bad.json").write_text('{"data": 3}', encoding="utf-8")
    with pytest.raises(SourceError, match="bad.json: not a SQuAD-format file"):
        load_qa(tmp_path / "bad.json")
