"""``sysmonx config check|compile|decode`` and ``-s`` / ``-? config`` from the command line."""

from sysmonx.cli import builtin_config_path, main


def test_compile_then_decode_then_compile_is_identical(tmp_path, capsys):
    blob, xml, blob2 = tmp_path / "rules.bin", tmp_path / "back.xml", tmp_path / "rules2.bin"
    assert main(["config", "compile", str(builtin_config_path()), "-o", str(blob)]) == 0
    assert main(["config", "decode", str(blob), "-o", str(xml)]) == 0
    assert xml.read_text().startswith('<Sysmon schemaversion="4.90">')
    assert main(["config", "compile", str(xml), "-o", str(blob2)]) == 0
    assert blob.read_bytes() == blob2.read_bytes() and len(blob.read_bytes()) > 1000


def test_golden_blob_from_cli(corpus, tmp_path):
    d = corpus / "configs/Sysinternals__SysmonCommon/UnitTests/data"
    out = tmp_path / "x.bin"
    assert main(["config", "compile", str(d / "include_powershell.xml"), "-o", str(out)]) == 0
    assert out.read_bytes() == (d / "include_powershell.xml.bin").read_bytes()


def test_decode_garbage_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01garbage")
    assert main(["config", "decode", str(bad)]) == 1
    assert f"{bad}:" in capsys.readouterr().err


def test_check_reports_line(tmp_path, capsys):
    cfg = tmp_path / "c.xml"
    cfg.write_text('<Sysmon schemaversion="4.50">\n<EventFiltering>\n<ProcessCreate '
                   'onmatch="include">\n<Imag>x</Imag></ProcessCreate></EventFiltering></Sysmon>')
    assert main(["config", "check", str(cfg)]) == 1
    assert f"{cfg}:4:" in capsys.readouterr().err
    assert main(["config", "check", str(builtin_config_path())]) == 0


def test_schema_and_config_help(capsys):
    assert main(["-s", "4.50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('<manifest schemaversion="4.50" binaryversion="13.0">')
    assert main(["-?", "config"]) == 0
    assert "1      ProcessCreate        Process Create" in capsys.readouterr().out
