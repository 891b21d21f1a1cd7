import pytest

from ragglm.config import Settings
from ragglm.config_file import find_config_file, serve_options_from_file
from ragglm.errors import ConfigError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No config file or RAGGLM_* variable from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("RAGGLM_CONFIG", "RAGGLM_MODEL", "RAGGLM_TOP_K", "RAGGLM_QUANT", "RAGGLM_TEMPERATURE",
                 "RAGGLM_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_file_then_environment_then_arguments(isolated, monkeypatch):
    (isolated / "ragglm.toml").write_text('model = "from-file"\ntop_k = 7\nquant = "int8"\ntemperature = 1\n')
    settings = Settings.from_env()
    assert (settings.model, settings.top_k, settings.quant, settings.temperature) == ("from-file", 7, "int8", 1.0)
    monkeypatch.setenv("RAGGLM_TOP_K", "3")
    assert Settings.from_env().top_k == 3
    assert Settings.from_env(top_k=9, model=None).top_k == 9
    assert Settings.from_env(model=None).model == "from-file"


def test_compile_comes_from_the_file_or_the_environment(isolated, monkeypatch):
    assert Settings.from_env().compile is False
    (isolated / "ragglm.toml").write_text("compile = true\n")
    assert Settings.from_env().compile is True
    monkeypatch.setenv("RAGGLM_COMPILE", "0")
    assert Settings.from_env().compile is False
    (isolated / "ragglm.toml").write_text('compile = "yes"\n')
    with pytest.raises(ConfigError, match="compile"):
        Settings.from_env()


def test_user_config_folder_and_named_file(isolated, monkeypatch):
    assert find_config_file() is None
    user = isolated / "xdg" / "ragglm" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('device = "cuda"\n[serve]\nport = 9001\napi_key = "k"\n')
    assert Settings.from_env().device == "cuda"
    assert serve_options_from_file() == {"port": 9001, "api_key": "k"}
    named = isolated / "other.toml"
    named.write_text('device = "mps"\n')
    monkeypatch.setenv("RAGGLM_CONFIG", str(named))
    assert Settings.from_env().device == "mps"
    monkeypatch.setenv("RAGGLM_CONFIG", str(isolated / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml"):
        Settings.from_env()


@pytest.mark.parametrize("text, problem", [
    ("modle = 'x'\n", "unknown setting 'modle'"),
    ("top_k = 'four'\n", "top_k = 'four' must be a whole number"),
    ("top_k = \n", "not valid TOML"),
    ("[serve]\nport = '80'\n", "port must be a whole number"),
    ("[serve]\nbind = 1\n", "unknown \\[serve\\] option 'bind'"),
])
def test_bad_files_name_the_file_and_the_problem(isolated, text, problem):
    (isolated / "ragglm.toml").write_text(text)
    with pytest.raises(ConfigError, match=f"ragglm.toml: .*{problem}"):
        Settings.from_env()
        serve_options_from_file()
