"""Every vendor manual in the shared data: decrypts, page counts, known sentences on known pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragglm.connectors import load_many
from ragglm.connectors.pdf_cleanup import is_cjk

pytestmark = pytest.mark.slow

# file name -> (pages, viewer page number, a sentence printed on that page)
KNOWN = {
    "en/CH32V003_IAP_Use_Introduction.pdf": (
        3, 2, "The bin file could be downloaded to chip via serial(UART) port using WCHMcuIAP_WinAPP"),
    "en/CH32V00x Evaluation Board Reference-EN.pdf": (
        10, 5, "Hover over the variable in the source code to display the details"),
    "en/WCH-LinkUserManual-EN.pdf": (
        29, 14, "The WCH-LinkUtility tool can erase all user areas of the chip by controlling the hardware "
                "reset pin or by repowering the chip."),
    "en/WCHNET Protocol Stack Library Application Note.PDF": (
        26, 13, "Before the receive buffer is modified, it is better to call WCHNET_SocketRecvLen to check "
                "whether there is any remaining data in the buffer."),
    "zh/CH32V003_IAP使用说明.pdf": (2, 2, "在 APP 中运行时，可以通过“进入 IAP”指令跳转至 IAP 等待再下载。"),
    "zh/WCHNET使用文档.PDF": (
        27, 13, "如果远端不在线或端口未打开，库会自动重试一定次数，仍然不成功会产生超时中断SINT_STAT_TIM_OUT。"),
    "zh/以太网例程使用注意事项.pdf": (
        6, 1, "以太网工程中的 NetLib 文件夹包含了不同硬件接口的驱动文件和协议栈库文件等，如下图 a 所示。"),
    "zh/沁恒WCHGUI软件说明文档.pdf": (
        19, 3, "为帮助开发者快速理解 WCHGUI 框架的逻辑，此处对不必要的功能进行裁剪，开发者基本只需要关注自己的业务层即可"),
    "zh/沁恒低功耗蓝牙MESH软件开发参考手册.PDF": (
        40, 5, "成为蓝牙 mesh 网络中一员的设备被称为节点(Node)，蓝牙 mesh 规格定义了节点可能拥有的特性。"),
}


@pytest.fixture(scope="module")
def pdf_folder(shared_data):
    folder = shared_data / "pdfs"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def documents(pdf_folder):
    report = load_many([pdf_folder])
    assert report.errors == []
    # sources are resolved paths: a shared folder reached through a link is named where it lies
    return {Path(d.source).relative_to(pdf_folder.resolve()).as_posix(): d for d in report.documents}


def test_every_shared_pdf_is_known_and_encrypted_with_rc4_or_aes(pdf_folder):
    from pypdf import PdfReader

    files = sorted(p.relative_to(pdf_folder).as_posix() for p in pdf_folder.rglob("*") if p.is_file())
    assert files == sorted(KNOWN)
    algorithms = set()
    for name in files:
        reader = PdfReader(pdf_folder / name)
        assert reader.is_encrypted
        algorithms.add(int(reader.trailer["/Encrypt"].get_object()["/V"]))
    assert algorithms == {2, 5}  # V2: RC4 128-bit, V5: AES-256


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_page_count_and_known_sentence_on_its_page(documents, name):
    pages, number, sentence = KNOWN[name]
    document = documents[name]
    assert [p.number for p in document.pages] == list(range(1, pages + 1))
    assert sentence in document.pages[number - 1].text
    others = [p.number for p in document.pages if sentence in p.text]
    assert others == [number]


def test_running_headers_are_removed(documents):
    document = documents["zh/WCHNET使用文档.PDF"]
    for page in document.pages[1:]:
        assert "http://wch.cn" not in page.text
        assert not page.text.startswith("WCHNET协议栈库说明")
    mesh = documents["zh/沁恒低功耗蓝牙MESH软件开发参考手册.PDF"]
    assert sum("软件开发参考手册  http" in p.text for p in mesh.pages) == 0
    assert not any(re.match(r"V1\.1\s+\d+", p.text) for p in mesh.pages)


def test_ruled_tables_are_rows_under_their_header(documents):
    pages = documents["zh/WCHNET使用文档.PDF"].pages
    lines = pages[0].text.split("\n")
    header = lines.index("名称 | 宏定义 | 位定义 | 描述")
    assert lines[header + 2 : header + 4] == ["TCPMss | WCHNET_TCP_MSS | 0-31 | TCP MSS大小",
                                              "HeapSize | WCHNET _MEM_HEAP_SIZE | 0-31 | 堆分配内存大小"]
    assert pages[0].text.count("WCHNET_TCP_MSS") == 1  # the loose cells are gone
    assert pages[1].text.startswith("名称 | 宏定义 | 位定义 | 描述\n")  # the table goes on under its header
    # a description's second line, ruled off as a row of its own, stays in its cell
    assert " | HARDWARE_CHECKSUM_CONFIG | 26 | 硬件校验和检验和插入配置 1：启用，0：禁用" in pages[1].text.split("\n")
    tables = sum(d.metadata["tables"] for d in documents.values())
    assert tables > 100


def _drawn_cjk_runs(fragments: list[str]) -> list[str]:
    """Runs of two or more CJK characters that the PDF draws in one piece, with no space in between."""
    runs = []
    for fragment in fragments:
        runs += [r for r in re.findall(r"\S+", fragment) if len(r) >= 2 and all(is_cjk(c) for c in r)]
    return runs


def test_chinese_text_has_no_inserted_spaces_and_wrapped_lines_are_joined(pdf_folder, documents):
    from pypdf import PdfReader

    cjk = "[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]"
    wrap = re.compile(f"([^\\s]{{0,4}}{cjk})\n({cjk}[^\\s]{{0,4}})")  # no space before the break: a wrap
    runs_checked = joined = 0
    for name in [n for n in KNOWN if n.startswith("zh/")]:
        reader = PdfReader(pdf_folder / name)
        reader.decrypt("")
        for page, cleaned in zip(reader.pages, documents[name].pages, strict=True):
            fragments: list[str] = []
            raw = page.extract_text(visitor_text=lambda text, *args, into=fragments: into.append(text)) or ""
            raw_lines = [line.strip() for line in raw.splitlines() if line.strip()]
            edges = " ".join(raw_lines[:3] + raw_lines[-3:])  # running headers are dropped on purpose
            for run in _drawn_cjk_runs(fragments):
                assert run in cleaned.text or run in edges, (name, cleaned.number, run)
                runs_checked += 1
            for left, right in wrap.findall(raw):
                assert left + right in cleaned.text, (name, cleaned.number, left, right)
                joined += 1
    assert runs_checked > 1000 and joined > 200
