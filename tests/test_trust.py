"""Issue 9, "tests that must exist": what has to hold before a user can trust the report.

Non-Latin scripts, texts shorter than a shingle, byte-identical reruns, templates shared
along a chain, ``match`` and ``explain`` answers, the "found nothing" message and the band
layout. Every test parses what the CLI prints as JSON or reads the database through the
library.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest
from sqlalchemy import select

from conftest import (
    BELTA_SEED, TASS_SEED, cluster_ids, cluster_with, db_session, document_count, error_lines, near_copy,
    record_read_ahead,
)
from provenance import index
from provenance.cluster import components
from provenance.db.models import Document, DocumentBand, DocumentPair
from provenance.sketch import estimate_jaccard, from_blob


def ids_by_path(report: dict) -> dict[str, int]:
    return {d["path"]: d["id"] for d in report["documents"]}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def squeeze(text: str) -> str:
    """``text`` with every run of whitespace made one space."""
    return " ".join(text.split())


def edited(text: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


def inspect_summary(invoke, db: Path) -> dict:
    result = invoke("inspect", "--format", "json", db_path=db)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stored_signatures(db: Path) -> dict[int, bytes]:
    with db_session(db) as session:
        return {d.id: d.signature for d in session.scalars(select(Document).where(Document.is_latest.is_(True)))}


# -- 1. Russian and Chinese ---------------------------------------------------------------
RU_ARTICLE = (
    "Правительство Беларуси одобрило проект поправок к соглашению с Россией о военно-техническом "
    "сотрудничестве, подписанному в 2009 году. Как сообщила пресс-служба главы государства, документ "
    "станет основой для будущих переговоров, которые поручено провести Государственному "
    "военно-промышленному комитету. По словам представителей ведомства, поправки касаются совместного "
    "производства вооружений, обмена технологиями и подготовки военных специалистов. Эксперты отмечают, "
    "что решение было принято вскоре после завершения совместных учений «Запад-2025», которые прошли на "
    "территории республики с 12 по 16 сентября. Министр обороны России Андрей Белоусов заявил, что учения "
    "носили исключительно оборонительный характер и были направлены на отработку действий в случае "
    "возможной агрессии против Союзного государства. В ближайшие месяцы стороны намерены согласовать "
    "окончательный текст документа и определить сроки его вступления в силу.\n"
)
#: A reposting site rewords one phrase, uses straight quotes and re-wraps the lines.
RU_EDITS = [("Министр обороны России", "Глава Минобороны России"), ("«Запад-2025»", '"Запад-2025"')]
RU_OTHER = (
    "В Москве в выходные ожидается резкое похолодание: по данным синоптиков Гидрометцентра, температура "
    "воздуха опустится до минус пятнадцати градусов, а в Подмосковье местами до минус двадцати. Городские "
    "службы переведены в режим повышенной готовности, на улицы выйдет дополнительная снегоуборочная техника. "
    "Врачи советуют жителям столицы одеваться теплее и по возможности ограничить длительные прогулки, "
    "особенно пожилым людям и детям. Потепление, по прогнозам, начнётся лишь в середине следующей недели.\n"
)
ZH_ARTICLE = (
    "白俄罗斯总统卢卡申科日前批准了对2009年白俄罗斯与俄罗斯军事技术合作协定的修正草案。据白俄罗斯通讯社报道，"
    "该草案目前还不是最终文件，而是今后双方谈判的基础框架。谈判和签署修订协定的工作将由国家军事工业委员会负责，"
    "但该委员会的行动须事先获得白俄罗斯政府批准。分析人士指出，这一决定是在代号为“西方-2025”的联合军事演习"
    "结束后不久作出的。演习于9月12日至16日在白俄罗斯境内举行，数千名官兵和大量先进装备参加了演习。俄罗斯国防部长"
    "别洛乌索夫表示，演习完全是防御性质的，目的是为应对针对联盟国家的潜在侵略做好准备。\n"
)
#: Three characters changed; the copy also uses a half-width comma in one place.
ZH_EDITS = [("批准了", "核准了"), ("大量", "大批"), ("目的是", "目标是"), ("报道，", "报道,")]
ZH_OTHER = (
    "北京市气象台今天发布寒潮蓝色预警，预计明天夜间起本市将出现大风降温天气，最低气温可降至零下十二摄氏度。"
    "气象专家提醒市民注意防寒保暖，外出时尽量乘坐公共交通工具，并关注最新天气预报。与此同时，城市管理部门已经"
    "提前部署除雪防冻工作，环卫工人将连夜对主要道路进行巡查，确保市民出行安全。\n"
)


def test_russian_and_chinese_near_copies_cluster_and_unrelated_texts_stay_out(ingest, report_json, db, tmp_path):
    assert 80 <= len(RU_ARTICLE.split()) <= 120 and len(ZH_ARTICLE) >= 150
    paths = {
        "ru": write(tmp_path / "news" / "ru_original.txt", RU_ARTICLE),
        "ru_copy": write(tmp_path / "mirror" / "ru_copy.txt", textwrap.fill(edited(RU_ARTICLE, RU_EDITS), 78) + "\n"),
        "ru_other": write(tmp_path / "news" / "ru_weather.txt", RU_OTHER),
        "zh": write(tmp_path / "news" / "zh_original.txt", ZH_ARTICLE),
        "zh_copy": write(tmp_path / "mirror" / "zh_copy.txt", edited(ZH_ARTICLE, ZH_EDITS)),
        "zh_other": write(tmp_path / "news" / "zh_weather.txt", ZH_OTHER),
    }
    order = ["ru", "zh", "ru_other", "zh_other", "ru_copy", "zh_copy"]
    summary = ingest(*(paths[name] for name in order))
    assert summary["documents_added"] == 6
    assert summary["exact_duplicates"] == 0 and summary["near_duplicates"] == 2

    report = report_json(db)
    ids = {name: ids_by_path(report)[str(path)] for name, path in paths.items()}
    for script in ("ru", "zh"):
        original, copy = ids[script], ids[f"{script}_copy"]
        cluster = cluster_with(report, original)
        assert cluster is not None, f"the {script} near-copy did not join its original: {report['clusters']}"
        assert cluster_ids(cluster) == {original, copy}, cluster
        assert cluster["canonical"]["id"] == original
        [member] = cluster["members"]
        assert member["relation"] == "near-duplicate"
        # below 1.0: the edits were seen, so the script's words were tokenised
        assert 0.8 <= member["similarity"] < 1.0, member
        assert cluster_with(report, ids[f"{script}_other"]) is None
    assert len(report["clusters"]) == 2
    assert report["summary"]["near_duplicates"] == 2 and report["summary"]["exact_duplicates"] == 0

    with db_session(db) as session:
        words = {d.id: d.word_count for d in session.scalars(select(Document))}
    assert words[ids["ru"]] >= len(RU_ARTICLE.split())  # Cyrillic words, not only the digits
    assert words[ids["zh"]] >= 150  # CJK character bigrams


# -- 2. texts shorter than a shingle ------------------------------------------------------
SHORT_TEXTS = [
    "red apple pie", "blue river stone", "quiet winter morning", "golden harvest moon", "broken glass window",
    "silver train station", "wooden garden bench", "frozen mountain lake", "bright summer festival",
    "ancient castle tower", "fresh orange juice", "dark forest path", "loud city traffic", "gentle spring rain",
    "empty parking lot", "narrow cobbled street", "heavy iron anchor", "sweet cherry jam", "cold marble floor",
    "tall pine tree", "small fishing boat", "busy weekly market", "soft woollen scarf", "rusty metal gate",
    "green tea ceremony", "old leather jacket", "noisy school playground", "purple velvet curtain",
    "late night bus", "warm bread roll",
]


def test_three_word_texts_do_not_cluster_but_identical_ones_do(ingest, report_json, db, tmp_path):
    words = [w for text in SHORT_TEXTS for w in text.split()]
    assert len(SHORT_TEXTS) == 30 and len(words) == 90 and len(set(words)) == 90
    folder = tmp_path / "short"
    for number, text in enumerate(SHORT_TEXTS):
        write(folder / f"text_{number:02d}.txt", text + "\n")

    summary = ingest(folder)
    assert summary["documents_added"] == 30
    assert summary["exact_duplicates"] == 0 and summary["near_duplicates"] == 0
    assert summary["short_documents"] == 30  # every one is shorter than the 5-word shingle
    report = report_json(db)
    assert report["clusters"] == [] and report["derivations"] == []
    assert report["summary"]["exact_duplicates"] == 0 and report["summary"]["near_duplicates"] == 0
    with db_session(db) as session:
        pairs = session.scalars(select(DocumentPair)).all()
        assert not [p for p in pairs if p.exact or p.similarity >= 0.8], [(p.first_id, p.second_id, p.similarity) for p in pairs]
        assert all(d.signature is not None for d in session.scalars(select(Document)))  # none left unsigned
    signatures = stored_signatures(db)
    assert len(set(signatures.values())) == 30

    twins = [write(tmp_path / site / "note.txt", "paper kite flying\n") for site in ("site-a", "site-b")]
    second = ingest(*twins)
    assert second["documents_added"] == 2 and second["exact_duplicates"] == 1 and second["near_duplicates"] == 0
    assert second["short_documents"] == 2
    report = report_json(db)
    ids = ids_by_path(report)
    [cluster] = report["clusters"]
    assert cluster_ids(cluster) == {ids[str(twins[0])], ids[str(twins[1])]}
    assert cluster["canonical"]["id"] == ids[str(twins[0])]
    assert [(m["relation"], m["similarity"]) for m in cluster["members"]] == [("exact", 1.0)]


# -- 3. determinism -----------------------------------------------------------------------
def _cli(cwd: Path, hash_seed: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PROVENANCE_DB"}
    env["PYTHONHASHSEED"] = hash_seed
    result = subprocess.run(
        [sys.executable, "-m", "provenance", "--db", "provenance.db", *args],
        cwd=cwd, env=env, capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def test_reruns_give_byte_identical_reports(tmp_path, belta_text, tass_text):
    inputs = tmp_path / "inputs"
    shutil.copytree(BELTA_SEED.parent, inputs / "seeds")
    (inputs / "derived").mkdir()
    shutil.copyfile(BELTA_SEED, inputs / "derived" / "exact.txt")
    write(inputs / "derived" / "edited.txt", near_copy(belta_text, changes=4))
    write(inputs / "derived" / "edited_tass.txt", near_copy(tass_text, changes=2))
    lines = belta_text.split("\n")
    write(inputs / "derived" / "excerpt.txt",
          "City officials opened a new bridge over the river on Friday after two years of work.\n"
          + "\n".join(lines[8:12]) + "\nThe bridge carries four lanes of traffic and a cycle path.\n")

    outputs = []
    for name, hash_seed, extra in (("run1", "1", []), ("run2", "987", ["--workers", "2"])):
        cwd = tmp_path / name
        cwd.mkdir()
        ingested = json.loads(_cli(cwd, hash_seed, "ingest", str(inputs), "--format", "json", *extra).stdout)
        assert ingested["documents_added"] == 6 and ingested["failed"] == 0
        outputs.append(_cli(cwd, hash_seed, "report", "--format", "json", "--no-timestamps").stdout)
        assert (cwd / "provenance.db").is_file()

    first, second = outputs
    report = json.loads(first)
    # the report has something to disagree about
    assert report["clusters"] and report["derivations"] and report["boilerplate"]
    assert all("ingested_at" not in d for d in report["documents"])
    assert first == second


# -- 4. a template shared along a chain ---------------------------------------------------
def test_template_chain_is_clustered_against_the_canonical(ingest, invoke, report_json, db, tmp_path, belta_text):
    """X_i holds paragraphs P_i, P_i+1, P_i+2: neighbours share two of three paragraphs,
    documents three apart share none. With two paragraphs a document, neighbours sit at a
    Jaccard of about 1/3, too close to 0.3 for the chain to exist reliably."""
    threshold = 0.3
    paragraphs = belta_text.split("\n")[1:10]
    assert len(set(paragraphs)) == 9
    chain = [write(tmp_path / "site" / f"x{i + 1}.txt", "\n\n".join(paragraphs[i : i + 3]) + "\n") for i in range(7)]
    ingest(*chain, "--threshold", threshold)
    report = report_json(db)
    assert report["threshold"] == threshold
    ids = ids_by_path(report)
    position = {ids[str(path)]: index for index, path in enumerate(chain)}

    # The chain exists: verified pairs above the threshold link the first document to the last.
    with db_session(db) as session:
        stored = {(p.first_id, p.second_id): p.similarity for p in session.scalars(select(DocumentPair))}
        linked = [pair for pair, similarity in stored.items() if similarity >= threshold]
    assert {frozenset((position[a], position[b])) for a, b in linked} >= {frozenset((i, i + 1)) for i in range(6)}
    assert any(len(group) == 7 for group in components(linked)), linked

    signatures = {i: from_blob(blob) for i, blob in stored_signatures(db).items()}
    assert report["clusters"]
    for cluster in report["clusters"]:
        members = sorted(position[i] for i in cluster_ids(cluster))
        assert members[-1] - members[0] <= 2, f"documents sharing no paragraph were clustered: {members}"
        canonical = cluster["canonical"]["id"]
        assert position[canonical] == members[0]
        for member in cluster["members"]:
            assert member["similarity"] >= threshold, member
            # the verified (exact) similarity where the pair was a candidate, else the estimate
            pair = (min(member["id"], canonical), max(member["id"], canonical))
            expected = stored.get(pair, estimate_jaccard(signatures[member["id"]], signatures[canonical]))
            assert member["similarity"] == pytest.approx(expected, abs=1e-4)
    clustered = [position[i] for c in report["clusters"] for i in cluster_ids(c)]
    assert len(clustered) == len(set(clustered))
    # The summary counts the stars the chain splits into, not the one group it links.
    assert len(report["clusters"]) >= 2
    assert inspect_summary(invoke, db)["clusters"] == len(report["clusters"])


# -- 5. match -----------------------------------------------------------------------------
def test_copies_just_above_the_threshold_are_not_lost_to_estimate_noise(ingest, invoke, report_json, db, tmp_path, tass_text):
    """Ten words changed in the TASS seed give copies at a true Jaccard of about 0.82; the
    MinHash estimate of some falls below 0.8. Candidates are verified exactly, so every
    copy at or above the threshold joins the original's cluster."""
    words = tass_text.split(" ")
    changeable = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 4]
    original = write(tmp_path / "wire" / "original.txt", tass_text)
    copies = []
    for k in range(16):
        edited = list(words)
        for i in random.Random(k).sample(changeable, 10):
            edited[i] = f"changed{k}x{i}"
        copies.append(write(tmp_path / "sites" / f"copy{k:02d}.txt", " ".join(edited)))
    ingest(original)
    ingest(*copies)
    measured = {}
    for copy in copies:
        result = invoke("explain", original, copy, "--format", "json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        measured[copy] = (data["jaccard"], data["estimated_jaccard"])
    noisy = [c for c, (exact, estimate) in measured.items() if estimate < 0.8 <= exact]
    assert noisy, f"no copy exercises the case (exact, estimate): {sorted(measured.values())}"
    report = report_json(db)
    original_id = ids_by_path(report)[str(original)]
    cluster = cluster_with(report, original_id)
    assert cluster is not None
    members = cluster_ids(cluster)
    for copy, (exact, _) in measured.items():
        assert (ids_by_path(report)[str(copy)] in members) == (exact >= 0.8), (copy, exact)


def test_match_finds_edited_seed_and_stores_nothing(ingest, invoke, db, seeds_dir, tmp_path, belta_text):
    ingest(seeds_dir)
    before = inspect_summary(invoke, db)
    documents_before = document_count(db)
    draft_text = near_copy(belta_text, changes=5, boilerplate=[])
    draft = write(tmp_path / "drafts" / "draft.txt", draft_text)

    answers = {
        "file": invoke("match", draft, "--format", "json"),
        "stdin": invoke("match", "-", "--format", "json", input=draft_text),
        "text": invoke("match", "--text", draft_text, "--format", "json"),
    }
    similarities = set()
    for how, result in answers.items():
        assert result.exit_code == 0, (how, result.output)
        data = json.loads(result.stdout)
        found = {d["path"]: d for d in data["documents"]}
        assert str(BELTA_SEED) in found, (how, data["documents"])
        assert str(TASS_SEED) not in found
        seed = found[str(BELTA_SEED)]
        assert seed["relation"] == "near-duplicate"
        assert data["threshold"] <= seed["similarity"] < 1.0
        similarities.add(seed["similarity"])
        assert data["passages"], how
        for passage in data["passages"]:
            assert passage["document"]["path"] == str(BELTA_SEED)
            start, end = passage["document_span"]
            assert belta_text[start:end] == passage["document_text"]
            assert draft_text[passage["span"][0] : passage["span"][1]] == passage["text"]
    assert len(similarities) == 1, similarities

    assert document_count(db) == documents_before
    assert inspect_summary(invoke, db) == before


def test_match_documents_only_finds_the_same_documents_without_the_passage_search(
    ingest, invoke, seeds_dir, belta_text, monkeypatch
):
    ingest(seeds_dir)
    draft_text = near_copy(belta_text, changes=5, boilerplate=[])
    full = json.loads(invoke("match", "--text", draft_text, "--format", "json").stdout)
    assert full["documents"] and full["passages"]

    def no_passage_search(*args, **kwargs):
        raise AssertionError("--documents-only searched the passage index")

    monkeypatch.setattr(index, "passage_candidates", no_passage_search)
    result = invoke("match", "--text", draft_text, "--documents-only", "--format", "json")
    assert result.exit_code == 0, result.output
    quick = json.loads(result.stdout)
    assert quick["documents"] == full["documents"]
    assert quick["passages"] is None
    unrelated = invoke("match", "--text", "Nothing stored resembles this sentence about gardening.", "--documents-only")
    assert unrelated.exit_code == 0, unrelated.output
    assert "passages not searched" in unrelated.stdout


def test_match_looks_up_many_texts_in_one_run_each_answered_as_alone(
    ingest, invoke, seeds_dir, tmp_path, belta_text, tass_text
):
    """A folder, a JSONL file and a missing path in one run: every readable text gets the
    answer it gets alone (in order), every unreadable one a line on stderr, and exit 1."""
    ingest(seeds_dir)
    inbox = tmp_path / "inbox"
    drafts = {
        "a_belta.txt": near_copy(belta_text, changes=5, boilerplate=[]),
        "b_unrelated.txt": "Farmers in the south reported a record apple harvest this autumn, and cooperatives "
                           "opened new cold stores for the crop.",
        "c_tass.md": near_copy(tass_text, changes=4, boilerplate=[]),
    }
    for name, text in drafts.items():
        write(inbox / name, text)
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"id": "wire-1", "text": drafts["c_tass.md"]}) + "\n{not json\n"
                    + json.dumps({"id": "wire-2", "text": drafts["a_belta.txt"]}) + "\n", encoding="utf-8")
    missing = tmp_path / "gone.txt"

    result = invoke("match", inbox, feed, missing, "--format", "json")
    assert result.exit_code == 1, result.output
    assert error_lines(result, str(missing)) and error_lines(result, f"{feed}:2")
    answers = json.loads(result.stdout)
    names = [answer["text"]["name"] for answer in answers]
    assert names == [str(inbox / name) for name in drafts] + [f"{feed}#wire-1", f"{feed}#wire-2"]
    alone = {name: json.loads(invoke("match", "--text", text, "--format", "json").stdout) for name, text in drafts.items()}
    expected = [alone[name] for name in drafts] + [alone["c_tass.md"], alone["a_belta.txt"]]
    for answer, single in zip(answers, expected):
        assert {k: v for k, v in answer.items() if k != "text"} == {k: v for k, v in single.items() if k != "text"}
        assert answer["text"]["content_hash"] == single["text"]["content_hash"]
    found = [{d["path"] for d in answer["documents"]} for answer in answers]
    assert found == [{str(BELTA_SEED)}, set(), {str(TASS_SEED)}, {str(TASS_SEED)}, {str(BELTA_SEED)}]
    assert answers[0]["passages"] and not answers[1]["passages"]
    assert "5 text(s) looked up" in result.stderr and "4 duplicate a stored document" in result.stderr

    lines = invoke("match", inbox, "--format", "jsonl", "--documents-only")
    assert lines.exit_code == 0, lines.output
    per_line = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [answer["documents"] for answer in per_line] == [answer["documents"] for answer in answers[:3]]
    assert all(answer["passages"] is None for answer in per_line)

    table = invoke("match", inbox / "b_unrelated.txt", inbox / "a_belta.txt")
    assert table.exit_code == 0, table.output
    headings = [line for line in table.stdout.splitlines() if line.startswith("== ")]
    assert headings == [f"== {inbox / 'b_unrelated.txt'} ==", f"== {inbox / 'a_belta.txt'} =="]
    assert "no stored document duplicates this text" in table.stdout.split(headings[1])[0]

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = invoke("match", empty, "--format", "json")
    assert nothing.exit_code != 0 and "no text to look up" in nothing.stderr


# -- 6. explain ---------------------------------------------------------------------------
def test_explain_gives_spans_that_slice_to_the_matched_text(ingest, invoke, db, tmp_path, belta_text):
    lines = belta_text.split("\n")
    planted = "\n".join(lines[1:3])
    unrelated = (
        "Farmers in the south of the country reported a record apple harvest this autumn, and local cooperatives "
        "hired seasonal workers to pick and pack the fruit before the first frosts arrived."
    )
    derived_text = planted + "\n" + unrelated + "\n"
    derived = write(tmp_path / "desk" / "derived.txt", derived_text)
    ingest(BELTA_SEED)
    ingest(derived)
    texts = {"seed": belta_text, "derived": derived_text}

    for first, second in (("seed", "derived"), ("derived", "seed")):
        paths = {"seed": BELTA_SEED, "derived": derived}
        result = invoke("explain", paths[first], paths[second], "--format", "json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["a"]["path"] == str(paths[first]) and data["b"]["path"] == str(paths[second])
        assert data["passages"], data["verdict"]
        derived_spans = []
        for passage in data["passages"]:
            spans = {first: passage["a_span"], second: passage["b_span"]}
            pieces = {name: texts[name][start:end] for name, (start, end) in spans.items()}
            assert pieces[first] == passage["a_text"] and pieces[second] == passage["b_text"]
            assert squeeze(pieces["derived"]) in squeeze(belta_text)
            assert squeeze(pieces["seed"]) in squeeze(planted)
            assert passage["label"] == "verbatim" and squeeze(pieces["derived"]) == squeeze(pieces["seed"])
            derived_spans.append(tuple(spans["derived"]))
        derived_spans.sort()
        assert derived_spans[0][0] == 0 and derived_spans[-1][1] == len(planted)
        for (_, end), (start, _) in zip(derived_spans, derived_spans[1:]):
            assert derived_text[end:start].strip() == "", "part of the planted paragraphs is not covered"


# -- 7. the "found nothing" message -------------------------------------------------------
def _nothing_found(ingest, report_json, db, *extra) -> dict:
    ingest(BELTA_SEED, TASS_SEED)
    report = report_json(db, *extra)
    assert report["clusters"] == [] and report["derivations"] == []
    return report


@pytest.mark.parametrize("threshold", [None, "0.55"])
def test_nothing_found_message_names_the_threshold(ingest, report_json, db, threshold):
    report = _nothing_found(ingest, report_json, db, *(["--threshold", threshold] if threshold else []))
    message = report["summary"]["message"]
    assert message.startswith("nothing found among 2 document(s)"), message
    assert f"threshold {threshold or '0.8'}" in message, message


def test_match_reads_ahead_of_later_texts_once_a_lookup_waited_on_the_disk(
    ingest, invoke, db, seeds_dir, tmp_path, belta_text, tass_text, monkeypatch
):
    """Once a lookup has waited on the disk, the texts after it are prepared a few ahead and
    their passage buckets read ahead on other connections: every later text's keys, in
    order, with the same answers, still one at a time, and never for documents only."""
    from provenance import lookup, manifest
    from provenance.db.session import make_engine, session_scope
    from provenance.prepare import prepare
    from provenance.reader import RawDocument

    ingest(seeds_dir)
    inbox = tmp_path / "inbox"
    drafts = [near_copy(text, changes=changes, boilerplate=[]) for changes in (2, 5, 9) for text in (belta_text, tass_text)]
    drafts.insert(3, "Farmers in the south reported a record apple harvest this autumn, and cooperatives opened "
                     "new cold stores for the crop.")
    for number, text in enumerate(drafts):
        write(inbox / f"{number:02}.txt", text)
    asked, answers = record_read_ahead(monkeypatch, lookup)
    monkeypatch.setattr(lookup, "LOOK_AHEAD_TEXTS", 2)

    def matched(waited: bool, *options: str) -> list:
        monkeypatch.setattr(lookup, "waited_on_disk", lambda since: waited)
        result = invoke("match", inbox, "--format", "json", *options)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    without = matched(False)
    assert asked == [] and sum(1 for answer in without if answer["passages"]) >= 6
    assert matched(True) == without
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(engine) as session:
            settings = manifest.load(session)
    finally:
        engine.dispose()
    keys = [sorted({key for passage in prepare(RawDocument(path="x", text=text, format="text", encoding="utf-8",
                                                           size_bytes=len(text)), settings).passages
                    for key in passage.band_keys}) for text in drafts]
    statement = index.buckets_ahead(settings)
    assert asked == [(statement, values) for values in keys[1:]] and all(keys)
    assert None not in answers and len(answers) == len(drafts) - 1
    # Only the passage search reads ahead: documents only, nothing is.
    del asked[:]
    assert [answer["documents"] for answer in matched(True, "--documents-only")] == [answer["documents"] for answer in without]
    assert asked == []

    # Texts are taken from the caller a few ahead of the answers, never all at once.
    monkeypatch.setattr(lookup, "waited_on_disk", lambda since: True)
    taken = []

    def texts():
        for number, text in enumerate(drafts):
            taken.append(number)
            yield f"{number:02}", text

    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(engine) as session:
            for number, answer in enumerate(lookup.match_texts(session, texts())):
                assert answer["text"]["name"] == f"{number:02}"
                assert len(taken) <= number + 1 + lookup.LOOK_AHEAD_TEXTS
            assert len(taken) == len(drafts)
    finally:
        engine.dispose()


def test_nothing_found_message_names_the_highest_similarity(ingest, report_json, db):
    report = _nothing_found(ingest, report_json, db)
    message = report["summary"]["message"]
    signatures = [from_blob(blob) for blob in stored_signatures(db).values()]
    highest = estimate_jaccard(*signatures)
    assert highest < 0.8
    assert "threshold 0.8" in message, message
    found = re.search(r"highest similarity (\d\.\d+)", message)
    assert found is not None, message
    assert float(found.group(1)) == pytest.approx(highest, abs=0.006)


# -- 8. band layout -----------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_inspect_shows_band_layout_and_candidate_probabilities(ingest, invoke, db, seeds_dir, threshold):
    ingest(seeds_dir, *(["--threshold", threshold] if threshold else []))
    data = inspect_summary(invoke, db)
    expected_threshold = threshold or 0.8
    document = data["settings"]["document"]
    assert data["settings"]["near_duplicate_threshold"] == expected_threshold
    assert document["lsh_threshold"] == expected_threshold
    layout = data["band_layout"]
    bands, rows = layout["bands"], layout["rows"]
    assert (bands, rows) == (document["bands"], document["rows"])
    assert bands >= 2 and rows >= 1 and bands * rows <= document["num_perm"]
    # the layout shown is the one used: every document has one key per band
    with db_session(db) as session:
        for d in session.scalars(select(Document)):
            keys = session.scalars(select(DocumentBand.band_key).where(DocumentBand.document_id == d.id)).all()
            assert len(keys) == bands, d.path

    probabilities = layout["candidate_probability"]
    levels = [round(expected_threshold + delta, 2) for delta in (-0.1, 0.0, 0.1)]
    assert list(probabilities) == [f"{s:.2f}" for s in levels]
    values = list(probabilities.values())
    for level, value in zip(levels, values):
        assert value == pytest.approx(1 - (1 - level**rows) ** bands, abs=1e-4)
    assert values[0] < values[1] < values[2]
    assert values[1] >= 0.9  # the layout favours recall at the threshold
    assert values[2] > 0.99


def test_band_layout_follows_the_threshold(ingest, invoke, tmp_path, seeds_dir):
    layouts = {}
    for threshold in ("0.5", "0.8"):
        db = tmp_path / f"t{threshold}.db"
        ingest(seeds_dir, "--threshold", threshold, db_path=db)
        layout = inspect_summary(invoke, db)["band_layout"]
        layouts[threshold] = (layout["bands"], layout["rows"])
    assert layouts["0.5"] != layouts["0.8"]
    # a lower threshold needs shorter bands (fewer rows) to catch weaker pairs
    assert layouts["0.5"][1] < layouts["0.8"][1]


def _crowded_corpus(
    tmp_path: Path, bucket_cap: int, url: Optional[str] = None, lone_band_bucket_max: Optional[int] = None,
    one_run: bool = False,
):
    """Five documents sharing one long paragraph, each with its own opening (into ``url``,
    else a new SQLite file), ingested a run each or all in ``one_run``."""
    from provenance.db.migrate import upgrade_to_head
    from provenance.db.session import database_url, make_engine
    from provenance.ingest import Ingestor
    from provenance.settings import Settings

    shared = (
        "The finance ministry said on Tuesday that the new customs rules for grain exports will apply from "
        "the first of March, after talks with partners in the union on quotas, duties and inspections."
    )
    openings = [
        "Heavy snow closed three mountain passes overnight and rescuers reached a stranded bus at dawn.",
        "A chess prodigy aged eleven won the national championship after a tense final round in Grodno.",
        "The orchestra announced a spring tour with twelve concerts across four neighbouring countries.",
        "Scientists catalogued a rare orchid in the marshes near the border for the first time in decades.",
        "Local bakers protested rising flour prices outside the city hall with loaves and handwritten signs.",
    ]
    folder = tmp_path / f"cap{bucket_cap}"
    folder.mkdir()
    paths = []
    for number, opening in enumerate(openings):
        path = folder / f"{number}.txt"
        path.write_text(f"{opening}\n\n{shared}\n", encoding="utf-8")
        paths.append(str(path))
    engine = make_engine(url or database_url(str(tmp_path / f"cap{bucket_cap}.db")))
    upgrade_to_head(engine)
    settings = dataclasses.replace(Settings(), bucket_cap=bucket_cap)
    if lone_band_bucket_max is not None:
        settings = dataclasses.replace(settings, lone_band_bucket_max=lone_band_bucket_max)
    ingestor = Ingestor(engine, settings)
    for run in [paths] if one_run else [[path] for path in paths]:
        ingestor.ingest_paths(run)
    return engine, ingestor, shared


def _shared_passage_lookup(engine, ingestor, shared: str, count_first: bool = False):
    from provenance.db.models import Passage

    with db_session_for(engine) as session:
        last = session.scalar(select(Document.id).order_by(Document.id.desc()).limit(1))
        rows = session.execute(
            select(Passage.id, Passage.signature, Passage.start_offset, Passage.end_offset)
            .where(Passage.document_id == last, Passage.signature.is_not(None))
        ).all()
        text = session.scalar(select(Document.text).where(Document.id == last))
        mine = [r for r in rows if shared[:40] in text[r.start_offset : r.end_offset]]
        assert len(mine) == 1
        keys = set(index.passage_band_keys(mine[0].signature, ingestor.settings.passage))
        oversized: list[int] = []
        found = index.passage_candidates(
            session, [(r.id, r.signature) for r in rows], last, ingestor.settings, oversized=oversized,
            count_first=count_first,
        )
    return found.get(mine[0].id, set()), oversized, keys


def db_session_for(engine):
    from provenance.db.session import session_scope

    return session_scope(engine)


def test_crowded_passage_buckets_are_skipped_and_remembered(tmp_path):
    """A passage bucket holding more than bucket_cap others is a template signal: it is
    skipped (and named) instead of making every lookup read it."""
    engine, ingestor, shared = _crowded_corpus(tmp_path, bucket_cap=1000)
    candidates, oversized, _ = _shared_passage_lookup(engine, ingestor, shared)
    assert len(candidates) == 4 and oversized == [] and ingestor.crowded_buckets == set()
    engine.dispose()

    engine, ingestor, shared = _crowded_corpus(tmp_path, bucket_cap=2)
    assert ingestor.crowded_buckets, "the fourth and fifth documents should have met over-full buckets"
    candidates, oversized, keys = _shared_passage_lookup(engine, ingestor, shared)
    assert candidates == set()
    assert keys <= set(oversized), "every band of the shared passage sits in an over-full bucket"
    assert keys <= ingestor.crowded_buckets, "and the ingest remembered them"
    engine.dispose()


@pytest.mark.parametrize("bucket_cap, crowded", [(3, True), (4, False)])
def test_bucket_cap_counts_only_other_documents_passages(tmp_path, db_url, bucket_cap, crowded):
    """The shared passage's buckets hold five passages, one of them the looked-up
    document's own: four others, so a cap of 4 keeps them and a cap of 3 skips them,
    whether the lookup reads a bucket's members, counts them first (SQLite) or reads only
    as many as the cap needs (PostgreSQL)."""
    engine, ingestor, shared = _crowded_corpus(tmp_path, bucket_cap=bucket_cap, url=db_url)
    for count_first in (False, True):
        candidates, oversized, keys = _shared_passage_lookup(engine, ingestor, shared, count_first)
        if crowded:
            assert candidates == set() and keys <= set(oversized), count_first
        else:
            assert len(candidates) == 4 and not keys & set(oversized), count_first
    engine.dispose()


@pytest.mark.parametrize("count_first", [False, True])
def test_a_lone_band_in_a_busy_bucket_makes_no_candidate(db_url, count_first):
    """A stored passage that shares only one band with a new one, in a bucket holding more
    than lone_band_bucket_max others, is not its candidate; one that shares two bands (two
    busy ones, or a busy one and a quiet one) is, and so is one whose only band is quiet.
    With 0 every band counts, as before the setting. Counted first (SQLite), the busy
    buckets are not read: SQLite finds the passages in two of them, with the same result."""
    from provenance.db.bulk import insert_rows
    from provenance.db.migrate import upgrade_to_head
    from provenance.db.models import PassageBand, RecentPassageBand
    from provenance.db.session import make_engine
    from provenance.settings import Settings

    engine = make_engine(db_url)
    upgrade_to_head(engine)
    busy, other_busy, quiet, far = 11, 22, 33, 44
    mine, elsewhere = 1000, 2000
    with db_session_for(engine) as session:
        # busy: 1-5; other_busy: 1 and 6-9 (1 shares both busy bands); quiet: 2 (also in
        # busy), 10 and 11; far: a busy bucket only the other new passage has.
        insert_rows(session, PassageBand.__table__, ("band_key", "passage_id"),
                    [*((busy, p) for p in range(1, 6)), *((other_busy, p) for p in (1, 6, 7, 8)),
                     (quiet, 2), (quiet, 10), *((far, p) for p in range(12, 17))])
        insert_rows(session, RecentPassageBand.__table__, ("band_key", "passage_id"), [(other_busy, 9), (quiet, 11)])
        signed = [(mine, b""), (elsewhere, b"")]
        keys = {mine: (busy, other_busy, quiet), elsewhere: (far, quiet)}
        found = {}
        for limit in (0, 3, 5):
            settings = dataclasses.replace(Settings(), lone_band_bucket_max=limit)
            found[limit] = index.passage_candidates(session, signed, -1, settings, band_keys=keys,
                                                    count_first=count_first)
    assert found[0] == {mine: set(range(1, 12)), elsewhere: {2, 10, 11, *range(12, 17)}}
    assert found[3] == {mine: {1, 2, 10, 11}, elsewhere: {2, 10, 11}}
    assert found[5] == found[0], "a bucket of five others is not more than five"
    engine.dispose()


def test_copies_in_busy_buckets_share_every_band_and_stay_candidates(tmp_path):
    """Five documents sharing one paragraph: its buckets hold four other passages each,
    over a lone-band limit of 2, but the copies share all their bands, so each is found."""
    engine, ingestor, shared = _crowded_corpus(tmp_path, bucket_cap=1000)
    ingestor.settings = dataclasses.replace(ingestor.settings, lone_band_bucket_max=2)
    candidates, oversized, _ = _shared_passage_lookup(engine, ingestor, shared)
    assert len(candidates) == 4 and oversized == []
    engine.dispose()


def test_busy_buckets_kept_in_memory_answer_as_buckets_read_anew(tmp_path, monkeypatch):
    """Busy buckets' members kept across documents (index.BusyBuckets) give the candidates
    a fresh read gives, passages stored since included, without reading those buckets
    again; quiet buckets are always read."""
    from provenance.db.bulk import insert_rows
    from provenance.db.migrate import upgrade_to_head
    from provenance.db.models import PassageBand, RecentPassageBand
    from provenance.db.session import database_url, make_engine
    from provenance.settings import Settings

    engine = make_engine(database_url(str(tmp_path / "busy.db")))
    upgrade_to_head(engine)
    busy, other_busy, quiet = 11, 22, 33
    mine = 1000
    keys = {mine: (busy, other_busy, quiet)}
    settings = dataclasses.replace(Settings(), lone_band_bucket_max=3)
    kept = index.BusyBuckets()
    reads = []
    real_read = index._joined_members

    def counting_read(session, wanted):
        reads.append(set(wanted))
        return real_read(session, wanted)

    monkeypatch.setattr(index, "_joined_members", counting_read)
    try:
        with db_session_for(engine) as session:
            insert_rows(session, PassageBand.__table__, ("band_key", "passage_id"),
                        [*((busy, p) for p in range(1, 6)), *((other_busy, p) for p in (1, 6, 7, 8)), (quiet, 2)])
            insert_rows(session, RecentPassageBand.__table__, ("band_key", "passage_id"), [(other_busy, 9)])

            def candidates():
                reads.clear()
                remembered = index.passage_candidates(session, [(mine, b"")], -1, settings, band_keys=keys, busy=kept)
                read_by_this_call = set().union(*reads)
                anew = index.passage_candidates(session, [(mine, b"")], -1, settings, band_keys=keys)
                assert remembered == anew
                return remembered[mine], read_by_this_call

            assert candidates() == ({1, 2}, {busy, other_busy, quiet})
            assert (kept.asked, kept.at_hand, len(kept)) == (2, 0, 2)
            # Stored through the index, and so told to the memory: 20 shares both busy bands.
            index.add_passages(session, [(20, b""), (21, b""), (22, b"")], settings,
                               band_keys={20: (busy, other_busy), 21: (busy,), 22: (quiet,)}, busy=kept)
            assert candidates() == ({1, 2, 20, 22}, {quiet}), "the busy buckets are not read again"
            assert (kept.asked, kept.at_hand) == (4, 2)
    finally:
        engine.dispose()


def test_busy_buckets_follow_the_index_and_forget_when_it_may_have_changed(tmp_path):
    """What is added to and taken out of the passage index is added to and taken out of the
    kept buckets; the least recently used go first past the capacity; and everything is
    forgotten when another connection committed, or this one wrote in between, since the
    last transaction that used them ended."""
    from sqlalchemy import text

    from provenance.db.migrate import upgrade_to_head
    from provenance.db.session import database_url, make_engine, write_scope

    kept = index.BusyBuckets(capacity=7)
    kept.keep(1, [10, 11, 12])
    kept.keep(2, [20, 21])
    kept.added([(1, 13), (3, 30), (2, 22)])
    kept.removed([(1, 10), (2, 99), (4, 40)])
    assert {key: list(ids) for key, ids in kept.take([1, 2, 3]).items()} == {1: [11, 12, 13], 2: [20, 21, 22]}
    kept.take([1])  # 2 is now the least recently used
    kept.keep(5, [50, 51])  # 8 members: over 7
    assert set(kept.take([1, 2, 5])) == {1, 5}

    url = database_url(str(tmp_path / "kept.db"))
    engine, other = make_engine(url), make_engine(url)
    upgrade_to_head(engine)
    try:
        def transaction(write: bool = False) -> int:
            """Begin, report how many buckets are kept, keep one, end."""
            with write_scope(engine) as session:
                kept.begin(session)
                held = len(kept)
                if write:
                    session.execute(text("INSERT INTO passage_band (band_key, passage_id) VALUES (7, 70)"))
                kept.keep(len(held_counts) + 100, [1])
                kept.ended(session)
                return held

        held_counts: list[int] = []
        held_counts.append(transaction())
        held_counts.append(transaction(write=True))  # its own writes, told as they happen
        held_counts.append(transaction())
        with write_scope(other) as session:
            session.execute(text("INSERT INTO passage_band (band_key, passage_id) VALUES (8, 80)"))
        held_counts.append(transaction())
        with write_scope(engine) as session:  # this connection, not through the kept buckets
            session.execute(text("INSERT INTO passage_band (band_key, passage_id) VALUES (9, 90)"))
        held_counts.append(transaction())
        assert held_counts == [0, 1, 2, 0, 0]
    finally:
        engine.dispose()
        other.dispose()


def test_an_ingest_keeps_busy_buckets_and_stores_what_it_would_without(tmp_path, monkeypatch):
    """Five documents sharing a paragraph over a lone-band limit of 2: with the busy
    buckets kept across documents (read once, then told what is stored) the run stores the
    same derivations as without, and a batch that fails forgets them."""
    from provenance import report
    from provenance.db.session import session_scope

    outcomes = {}
    for capacity in (index.BUSY_MEMBERS_MAX, 0):
        monkeypatch.setattr(index, "BUSY_MEMBERS_MAX", capacity)
        folder = tmp_path / f"kept{capacity}"
        folder.mkdir()
        engine, ingestor, _ = _crowded_corpus(folder, bucket_cap=1000, lone_band_bucket_max=2, one_run=True)
        with session_scope(engine) as session:
            built = report.build(session, timestamps=False)
        outcomes[capacity] = (ingestor.busy_buckets.at_hand, [
            (item["derived"]["path"].replace(str(folder), ""), item["source"]["path"].replace(str(folder), ""),
             item["relation"], item["score"]) for item in built["derivations"]])
        if capacity:
            with pytest.raises(RuntimeError):
                with ingestor._writing():
                    ingestor.busy_buckets.keep(1, [2, 3])
                    raise RuntimeError("a batch that does not commit")
            assert len(ingestor.busy_buckets) == 0
        engine.dispose()
    (at_hand, stored), (none_at_hand, stored_without) = outcomes.values()
    assert at_hand > 0 and none_at_hand == 0
    assert len(stored) >= 4 and stored == stored_without


def test_a_bucket_is_crowded_by_its_members_in_both_band_tables_together(db_url):
    """Counting first (SQLite) stops at the limit in each band table; a bucket is still
    crowded when neither table alone holds the limit but the two together do, and a bucket
    under it is read whole from both. Without counting, every member is read."""
    from provenance.db.bulk import insert_rows, select_in
    from provenance.db.migrate import upgrade_to_head
    from provenance.db.models import PassageBand, RecentPassageBand
    from provenance.db.session import make_engine

    engine = make_engine(db_url)
    upgrade_to_head(engine)
    split, small, big, empty = 11, 22, 33, 44
    with db_session_for(engine) as session:
        assert sorted(select_in(session, "WITH k(v) AS ({values}) SELECT v FROM k", [3, 1, 2])) == [(1,), (2,), (3,)]
        insert_rows(session, PassageBand.__table__, ("band_key", "passage_id"),
                    [(split, 1), (split, 2), (split, 3), (small, 4), (small, 5), *((big, p) for p in range(6, 11))])
        insert_rows(session, RecentPassageBand.__table__, ("band_key", "passage_id"),
                    [(split, 12), (split, 13), (small, 14)])
        keys = [split, small, big, empty]
        members, full, _ = index._bucket_members(session, keys, 4, count_first=False)
        sqlite = session.connection().dialect.name == "sqlite"
        assert full == set() and empty not in members
        if not sqlite:
            assert {key: len(ids) for key, ids in members.items()} == {split: 4, small: 3, big: 4}, "at most 4 a key"
            assert set(members[small]) == {4, 5, 14} and set(members[big]) < set(range(6, 11))
        else:
            assert {key: sorted(ids) for key, ids in members.items()} == {
                split: [1, 2, 3, 12, 13], small: [4, 5, 14], big: [6, 7, 8, 9, 10]}
            members, full, busy = index._bucket_members(session, keys, 4, count_first=True)
            assert full == {split, big} and busy == set()
            assert {key: sorted(ids) for key, ids in members.items()} == {small: [4, 5, 14]}
            members, full, busy = index._bucket_members(session, keys, 4, count_first=True, busy_over=2)
            assert full == {split, big} and busy == {small} and members == {}, "three members are over two"
    engine.dispose()


def test_default_band_layouts_are_what_datasketch_chooses():
    """The defaults spell out bands x rows (so start-up need not import scipy); they must
    stay what MinHashLSH picks for their thresholds and weights."""
    from provenance.settings import Settings

    for sketch in (Settings().document, Settings().passage):
        chosen = dataclasses.replace(sketch, bands=0, rows=0)  # 0 x 0: ask datasketch
        assert (chosen.bands, chosen.rows) == (sketch.bands, sketch.rows), sketch


def test_band_keys_are_the_stored_format():
    """Band keys are stored: a database built by an earlier version is looked up with keys
    computed now, so they must never change (values from the first implementation, which
    hashed a copy of each band's slice of the array)."""
    import numpy as np

    from provenance.settings import Settings
    from provenance.sketch import band_keys

    values = (np.arange(128, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32)
    passage = band_keys(values, Settings().passage)
    document = band_keys(values, Settings().document)
    assert len(passage) == 37 and len(document) == 21
    assert passage[:3] == [-1236421060607720018, -6520156208592881300, -6081787386044326404]
    assert passage[-1] == 4289148645301743931
    assert document[:3] == [6543284142309724023, 158300856781331821, 7548642609668774845]
    assert document[-1] == 5526469850667235320


@pytest.mark.parametrize("sizes", [[0], [1, 5, 30], [4095, 4096, 4097], [0, 3, 9000, 0, 17]])
def test_signatures_are_datasketch_minhash_values(sizes):
    """Signatures are computed in numpy, not through MinHash.update_batch; stored signatures
    must stay exactly what datasketch's affine32 MinHash gives for the same hashes, one set
    at a time or a document's passages in one batch (sets straddling the work blocks)."""
    import numpy as np
    from datasketch import MinHash

    from provenance.settings import Settings
    from provenance.settings import SketchSettings
    from provenance.sketch import signature, signatures

    rng = np.random.default_rng(sum(sizes))
    hash_sets = [np.unique(rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)) for n in sizes]
    for sketch in (Settings().document, Settings().passage, SketchSettings(shingle_size=5, num_perm=64, seed=7)):
        expected = []
        for hashes in hash_sets:
            minhash = MinHash(num_perm=sketch.num_perm, seed=sketch.seed, hashfunc=lambda value: value, scheme="affine32")
            minhash.update_batch(hashes)
            expected.append(minhash.hashvalues.astype(np.uint32))
        assert [s.tolist() for s in signatures(hash_sets, sketch)] == [e.tolist() for e in expected]
        assert [signature(h, sketch).tolist() for h in hash_sets] == [e.tolist() for e in expected]
