"""Sources beyond local files: S3 over real HTTP (a local S3-compatible server), HF datasets, feedback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from gradus import storage
from gradus.errors import DataError
from tasks import ingest
from tests.conftest import BANKING77
from tests.helpers.data import params_for


def banking(n: int, offset: int = 0) -> pd.DataFrame:
    rows = pd.read_csv(BANKING77 / "train.csv").iloc[offset : offset + n]
    return rows.rename(columns={"text": "utterance", "category": "intent"}).reset_index(drop=True)


def put_csv(client, bucket: str, key: str, frame: pd.DataFrame) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=frame.to_csv(index=False).encode())


@pytest.fixture()
def bucket(s3, request) -> str:
    name = "gradus-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    s3.create_bucket(Bucket=name)
    return name


def test_s3_prefix_is_read_object_by_object_with_etags(tmp_path: Path, s3, bucket: str) -> None:
    put_csv(s3, bucket, "intents/part-0.csv", banking(40))
    put_csv(s3, bucket, "intents/part-1.csv", banking(25, offset=40))
    s3.put_object(Bucket=bucket, Key="intents/README.md", Body=b"not a table")
    s3.put_object(Bucket=bucket, Key="other/part-9.csv", Body=b"text,label\nx,y\n")
    params = params_for(tmp_path, [{"kind": "s3", "uri": f"s3://{bucket}/intents/", "text_column": "utterance",
                                    "label_column": "intent"}])
    assert ingest.run(params)["rows"] == 65
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert raw["source"].unique().tolist() == [f"s3://{bucket}/intents/part-0.csv", f"s3://{bucket}/intents/part-1.csv"]
    assert raw["text"].tolist() == banking(65)["utterance"].tolist()
    manifest = json.loads((tmp_path / "manifest.json").read_text())["sources"]
    etags = [s3.head_object(Bucket=bucket, Key=f"intents/part-{i}.csv")["ETag"].strip('"') for i in range(2)]
    assert [m["etag"] for m in manifest] == etags and [m["rows"] for m in manifest] == [40, 25]
    first = (tmp_path / "raw.parquet").read_bytes()
    ingest.run(params)
    assert (tmp_path / "raw.parquet").read_bytes() == first


def test_s3_listing_follows_every_page(s3, bucket: str) -> None:
    for i in range(7):
        put_csv(s3, bucket, f"p/{i}.csv", banking(1, offset=i))
    objects = storage.list_objects(storage.s3_client(), f"s3://{bucket}/p/", (".csv",), page_size=2)
    assert [o.key for o in objects] == [f"p/{i}.csv" for i in range(7)]


def test_missing_s3_object_or_bucket_is_named(tmp_path: Path, s3, bucket: str) -> None:
    params = params_for(tmp_path, [{"kind": "s3", "uri": f"s3://{bucket}/nothing-here/"}])
    with pytest.raises(DataError, match=rf"s3://{bucket}/nothing-here/: no .* objects under this prefix"):
        ingest.run(params)
    params = params_for(tmp_path, [{"kind": "s3", "uri": "s3://gradus-no-such-bucket/x/"}])
    with pytest.raises(DataError, match=r"s3://gradus-no-such-bucket/x/: not found \(NoSuchBucket\)"):
        ingest.run(params)
    obj = storage.S3Object(bucket, "gone.csv", "", 0)
    with pytest.raises(DataError, match=rf"s3://{bucket}/gone.csv: not found"):
        storage.download(storage.s3_client(), obj, tmp_path)


def test_s3_access_denied_is_one_clear_line(tmp_path: Path, s3, bucket: str) -> None:
    put_csv(s3, bucket, "locked/part-0.csv", banking(5))
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    params = params_for(tmp_path, [{"kind": "s3", "uri": f"s3://{bucket}/locked/"}])
    with pytest.raises(DataError) as error:
        ingest.run(params)
    message = str(error.value)
    assert message.startswith(f"s3://{bucket}/locked/part-0.csv: access denied") and "bucket policy" in message
    assert not (tmp_path / "raw.parquet").exists()


def test_bad_s3_object_is_named_by_its_uri(tmp_path: Path, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="bad/part-0.csv", Body=b"text,label\ncaf\xe9,drink\n")
    params = params_for(tmp_path, [{"kind": "s3", "uri": f"s3://{bucket}/bad/"}])
    with pytest.raises(DataError, match=rf"^s3://{bucket}/bad/part-0.csv: not valid UTF-8 at byte offset 14"):
        ingest.run(params)


def test_hf_dataset_from_disk_with_class_labels(tmp_path: Path) -> None:
    import datasets

    frame = banking(30)
    names = sorted(frame["intent"].unique())
    features = datasets.Features({"utterance": datasets.Value("string"), "intent": datasets.ClassLabel(names=names)})
    data = datasets.Dataset.from_dict({"utterance": frame["utterance"].tolist(),
                                       "intent": [names.index(x) for x in frame["intent"]]}, features=features)
    datasets.DatasetDict({"train": data, "test": data.select(range(5))}).save_to_disk(tmp_path / "hf")
    params = params_for(tmp_path, [{"kind": "hf", "path": str(tmp_path / "hf"), "split": "test",
                                    "text_column": "utterance", "label_column": "intent"}])
    assert ingest.run(params)["rows"] == 5
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert raw["label"].tolist() == frame["intent"].head(5).tolist()
    bad = params_for(tmp_path, [{"kind": "hf", "path": str(tmp_path / "hf"), "split": "validation"}])
    with pytest.raises(DataError, match=r"no split 'validation' \(has \['test', 'train'\]\)"):
        ingest.run(bad)


def test_hf_source_needs_exactly_one_location(tmp_path: Path) -> None:
    from gradus.errors import ConfigError

    with pytest.raises(ConfigError, match="give exactly one of path"):
        params_for(tmp_path, [{"kind": "hf", "split": "train"}])


def test_feedback_records_are_appended_from_a_file_and_from_s3(tmp_path: Path, s3, bucket: str) -> None:
    main = tmp_path / "main.csv"
    banking(20).rename(columns={"utterance": "text", "intent": "label"}).to_csv(main, index=False)
    feedback = pd.DataFrame({"text": ["my card still has not come"], "label": ["card_arrival"],
                             "predicted": ["card_delivery_estimate"]})
    local = tmp_path / "feedback.jsonl"
    feedback.to_json(local, orient="records", lines=True)
    buffer = io.BytesIO()
    feedback.assign(text="card not here yet").to_parquet(buffer)
    s3.put_object(Bucket=bucket, Key="feedback/2026-11-22.parquet", Body=buffer.getvalue())
    params = params_for(tmp_path, [{"kind": "file", "path": str(main)},
                                   {"kind": "feedback", "path": str(local)},
                                   {"kind": "feedback", "path": f"s3://{bucket}/feedback/"}])
    assert ingest.run(params)["rows"] == 22
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert raw["text"].tail(2).tolist() == ["my card still has not come", "card not here yet"]
    kinds = [s["kind"] for s in json.loads((tmp_path / "manifest.json").read_text())["sources"]]
    assert kinds == ["file", "feedback", "feedback"]


def test_one_table_reader_serves_files_globs_and_s3_prefixes(tmp_path: Path, s3, bucket: str) -> None:
    """storage.read_tables is what ingest, feedback and the drift monitor read through."""
    rows = banking(30)
    rows.to_csv(tmp_path / "a.csv", index=False)
    rows.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    put_csv(s3, bucket, "batch/one.csv", rows)
    columns, fix = ["utterance", "intent"], "Set the columns"
    single = storage.read_tables(str(tmp_path / "a.csv"), columns=columns, fix=fix)
    globbed = storage.read_tables("*.*", columns=columns, fix=fix, root=tmp_path)
    remote = storage.read_tables(f"s3://{bucket}/batch/", columns=columns, fix=fix)
    assert [t.uri for t in globbed] == [str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")]
    assert remote[0].uri == f"s3://{bucket}/batch/one.csv" and remote[0].info["etag"]
    for table in (*single, *globbed, *remote):
        assert table.frame["utterance"].tolist() == rows["utterance"].tolist()
    for location in (str(tmp_path / "a.csv"), f"s3://{bucket}/batch/"):
        with pytest.raises(DataError, match=r"(a\.csv|batch/one\.csv): missing column\(s\) \['label'\].*Set the col"):
            storage.read_tables(location, columns=["utterance", "label"], fix=fix)
    with pytest.raises(DataError, match=rf"{tmp_path}: is a directory; give a file, or a glob such as"):
        storage.read_tables(str(tmp_path), columns=columns, fix=fix)
