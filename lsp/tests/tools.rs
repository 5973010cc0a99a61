//! In CI (`CI` set), the editor tools the end-to-end tests drive must be there:
//! without them `nvim.rs` and `pytest_lsp.rs` are ignored, and CI must not pass
//! with them unrun. Outside CI this test only reports what is missing.

#[test]
fn the_end_to_end_tests_have_their_tools_in_ci() {
    let mut missing = Vec::new();
    if !cfg!(eflow_has_nvim) {
        missing.push("`nvim` (apt-get install -y neovim)");
    }
    if !cfg!(eflow_has_python_venv) {
        missing.push("`python3` with `venv` (apt-get install -y python3-venv)");
    }
    if std::env::var_os("CI").is_some() {
        assert!(
            missing.is_empty(),
            "CI must run every end-to-end test, but the build found no {}",
            missing.join(" and no ")
        );
    } else if !missing.is_empty() {
        eprintln!("end-to-end tests ignored: missing {}", missing.join(", "));
    }
}
