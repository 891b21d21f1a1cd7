"""Legacy encodings read as what they are, and bytes that read as nothing are an error, never mojibake."""

import random

import pytest

from ragglm.connectors.charset import decode_bytes
from ragglm.errors import SourceError

SAMPLES = {
    "gbk": "门锁使用4节AA碱性电池供电，电池可以使用约10个月。更换电池时请先打开后盖。",
    "big5": "本手冊說明淨水器的安裝與使用方式。濾芯每十二個月更換一次，請勿自行拆卸機器。",
    "shift_jis": "このマニュアルでは、浄水器の設置と使い方について説明します。フィルターは十二か月ごとに交換してください。",
    "euc_jp": "このマニュアルでは、浄水器の設置と使い方について説明します。フィルターは十二か月ごとに交換してください。",
    "euc_kr": "이 설명서는 정수기의 설치 및 사용 방법을 설명합니다. 필터는 열두 달마다 교체하십시오.",
    "cp1252": "Le café est prêt à être servi. Remplacez le filtre après douze mois. Ça marche très bien.",
}


@pytest.mark.parametrize("encoding", sorted(SAMPLES))
def test_legacy_encodings_decode_to_the_original_text(encoding):
    text = SAMPLES[encoding] * 3
    assert decode_bytes(text.encode(encoding), "notes.txt") == text


def test_a_short_gbk_line_is_still_chinese():
    assert decode_bytes("滤芯每十二个月更换一次。".encode("gbk"), "a.txt") == "滤芯每十二个月更换一次。"


def test_random_bytes_are_an_error_naming_the_file():
    with pytest.raises(SourceError, match="garbled") as caught:
        decode_bytes(random.Random(7).randbytes(4000), "noise.txt")
    assert caught.value.source == "noise.txt" and "UTF-8" in caught.value.fix
