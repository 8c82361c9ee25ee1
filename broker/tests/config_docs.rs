//! docs/configuration.md shows the whole default configuration; this keeps it in step with the
//! file the binary prints (`broker config default`).

#[test]
fn configuration_doc_embeds_the_current_default_file() {
    let doc = include_str!("../../docs/configuration.md");
    let default = include_str!("../src/default_config.toml");
    assert!(
        doc.contains(default),
        "docs/configuration.md is out of date: paste broker/src/default_config.toml into its \
         'The default file' section"
    );
}
