import json

import pytest

from ulmfit.data.readers import read_table, read_texts
from ulmfit.errors import UlmfitError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_keeps_na_strings_and_strips_labels(tmp_path):
    p = write(tmp_path / "d.csv", 'text,label\nNA,pos\nnull, neg \n"a, quoted\nline",pos\n')
    t = read_table(p, label_col="label")
    assert t.texts == ["NA", "null", "a, quoted\nline"]
    assert t.labels == ["pos", "neg", "pos"]
    assert t.source == str(p)


def test_tsv_and_utf8_bom(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_bytes("\ufefftext\tlabel\nshe said \"hi\tx\n".encode("utf-8").replace(b"\tx", b"\tpos"))
    t = read_table(p, label_col="label")
    assert t.texts == ['she said "hi'] and t.labels == ["pos"]


def test_jsonl(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a", "y": 1}\n\n{"text": "b", "y": "2 "}\n')
    t = read_table(p, label_col="y")
    assert t.texts == ["a", "b"] and t.labels == ["1", "2"]


def test_txt_and_read_texts_skip_blank(tmp_path):
    p = write(tmp_path / "d.txt", "one\r\n\ntwo\n")
    assert read_texts(p) == ["one", "two"]
    with pytest.raises(UlmfitError, match="line 2"):
        read_table(p)
    assert read_table(p, on_empty="keep").texts == ["one", "", "two"]
    with pytest.raises(UlmfitError, match="no labels"):
        read_table(p, label_col="label")


def test_class_folders(tmp_path):
    for label, name, text in [("pos", "a.txt", "good"), ("neg", "b.txt", "bad"), ("pos", "c.txt", "fine")]:
        (tmp_path / label).mkdir(exist_ok=True)
        write(tmp_path / label / name, text)
    t = read_table(tmp_path)
    assert t.texts == ["bad", "good", "fine"] and t.labels == ["neg", "pos", "pos"]
    assert sorted(read_texts(tmp_path)) == ["bad", "fine", "good"]


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(UlmfitError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(UlmfitError, match="empty"):
        read_table(write(tmp_path / "e.csv", ""))
    with pytest.raises(UlmfitError, match="no rows"):
        read_table(write(tmp_path / "h.csv", "text,label\n"))
    with pytest.raises(UlmfitError, match="no documents"):
        (tmp_path / "emptydir").mkdir()
        read_table(tmp_path / "emptydir")


def test_undecodable_names_offset_line_and_latin1(tmp_path):
    p = write(tmp_path / "d.csv", "text\nok\ncaf\xe9\n", encoding="latin-1")
    with pytest.raises(UlmfitError) as e:
        read_table(p)
    msg = str(e.value)
    assert "d.csv" in msg and "byte offset 11" in msg and "line 3" in msg and "--encoding latin-1" in msg
    assert "\n" not in msg
    assert read_table(p, encoding="latin-1").texts == ["ok", "café"]


def test_missing_column_suggests_closest(tmp_path):
    p = write(tmp_path / "d.csv", "Text,sentiment\na,pos\n")
    with pytest.raises(UlmfitError, match="did you mean 'Text'"):
        read_table(p)
    with pytest.raises(UlmfitError, match="did you mean 'sentiment'"):
        read_table(p, text_col="Text", label_col="sentimnet")


def test_empty_texts_error_skip_keep(tmp_path):
    rows = ["text,label", "a,x", " ,y", "b,z", ",w"] + [",v"] * 5
    p = write(tmp_path / "d.csv", "\n".join(rows) + "\n")
    with pytest.raises(UlmfitError) as e:
        read_table(p, label_col="label")
    msg = str(e.value)
    assert "line 3 (row 2)" in msg and "line 5 (row 4)" in msg and "and 2 more" in msg and "\n" not in msg
    t = read_table(p, label_col="label", on_empty="skip")
    assert t.texts == ["a", "b"] and t.labels == ["x", "z"]
    assert len(read_table(p, label_col="label", on_empty="keep").texts) == 9


def test_line_numbers_count_multiline_fields(tmp_path):
    p = write(tmp_path / "d.csv", 'text\n"two\nlines"\n  \n')
    with pytest.raises(UlmfitError, match=r"line 4 \(row 2\)"):
        read_table(p)


def test_missing_labels_named(tmp_path):
    p = write(tmp_path / "d.csv", "text,label\na,x\nb, \nc,y\n")
    with pytest.raises(UlmfitError, match=r"missing label.*line 3 \(row 2\)"):
        read_table(p, label_col="label")


def test_malformed_json_line(tmp_path):
    p = write(tmp_path / "d.jsonl", json.dumps({"text": "a"}) + "\n{oops\n")
    with pytest.raises(UlmfitError, match="line 2 is not valid JSON"):
        read_table(p)
    p = write(tmp_path / "e.jsonl", '["a"]\n')
    with pytest.raises(UlmfitError, match="line 1"):
        read_table(p)


def test_a_nested_text_or_label_is_refused_naming_the_line(tmp_path):
    """A JSON array or object where a text or a label belongs is one error naming the line and the field
    (never its JSON source read as text); in a column nobody reads it is harmless."""
    from ulmfit.data.readers import iter_text_chunks

    rows = [{"text": "a", "label": "x", "meta": {"k": [1]}}, {"text": ["b", "c"], "label": "y", "meta": None}]
    p = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UlmfitError, match=r"line 2 \(row 2\): field 'text' is a nested JSON array, not text"):
        read_table(p, label_col="label")
    with pytest.raises(UlmfitError, match=r"line 2: field 'text' is a nested JSON array"):
        list(iter_text_chunks(p, "text", rows=10))
    p = write(tmp_path / "e.jsonl", json.dumps({"text": "a", "label": {"name": "x"}, "meta": [1]}) + "\n")
    with pytest.raises(UlmfitError, match=r"line 1 \(row 1\): field 'label' is a nested JSON object"):
        read_table(p, label_col="label")
    assert read_table(p).texts == ["a"]  # the nested label and meta are not read


def test_bad_csv_and_suffix(tmp_path):
    with pytest.raises(UlmfitError, match="cannot parse"):
        read_table(write(tmp_path / "d.csv", 'text\n"unclosed\n'))
    with pytest.raises(UlmfitError, match="unsupported file type"):
        read_table(write(tmp_path / "d.xlsx", "x"))


def test_streamed_jsonl_refuses_deep_nesting_in_one_line(tmp_path):
    """`predict` streams a .jsonl through iter_text_chunks: a line nested past Python's recursion limit is
    one UlmfitError naming the line, as in read_table, never a RecursionError traceback."""
    from ulmfit.data.readers import iter_text_chunks

    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(UlmfitError, match="line 2"):
        list(iter_text_chunks(path, "text", "utf-8", rows=10))
