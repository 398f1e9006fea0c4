"""Cut the small CIFAR-10 sample that ships with hf_ssl (README quickstart and unit tests) from the full set.

    python data/make_cifar10_sample.py ../shared/data/cifar10 data/cifar10-sample

Takes the first rows of every train shard and of the test split, unchanged (same JPEG bytes, same labels), and
writes them as parquet shards in the Hub export layout, so `load_dataset("data/cifar10-sample")` reads them.
"""

import argparse
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

TRAIN_PER_SOURCE_SHARD = 625  # x 8 source shards = 5,000 train images
TRAIN_SHARDS = 4
TEST_ROWS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("target", type=pathlib.Path)
    args = parser.parse_args()
    out = args.target / "data"
    out.mkdir(parents=True, exist_ok=True)
    train_files = sorted((args.source / "data").glob("train-*.parquet"))
    train = pa.concat_tables([pq.read_table(f).slice(0, TRAIN_PER_SOURCE_SHARD) for f in train_files])
    rows = train.num_rows // TRAIN_SHARDS
    for i in range(TRAIN_SHARDS):
        pq.write_table(train.slice(i * rows, rows), out / f"train-{i:05d}-of-{TRAIN_SHARDS:05d}.parquet")
    test = pq.read_table(next((args.source / "data").glob("test-*.parquet"))).slice(0, TEST_ROWS)
    pq.write_table(test, out / "test-00000-of-00001.parquet")
    shutil.copy(pathlib.Path(__file__).with_name("cifar10-sample.README.md"), args.target / "README.md")
    print(f"train {train.num_rows} rows in {TRAIN_SHARDS} shards, test {test.num_rows} rows -> {args.target}")


if __name__ == "__main__":
    main()
