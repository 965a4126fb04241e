//! The assembled soft-prompt model: where soft tokens go, which positions carry loss, that
//! gradients reach the adapter but never the frozen encoder, that the loss falls when the
//! adapter trains, and that batched generation equals row-by-row generation.

mod common;

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{VOCAB, batch};
use uqa_models::adapter::{Adapter, AdapterConfig};
use uqa_models::llm::chat::EncodedChat;
use uqa_models::llm::{CausalLm, GenerateConfig, LlmConfig};
use uqa_models::loss::AnswerLoss;
use uqa_models::soft_prompt::{Placement, SoftPromptModel, UserPrompt};
use uqa_models::{PretrainConfig, PretrainModel, seeded_var_builder};

fn encoder(vm: &VarMap) -> PretrainModel {
    let cfg: PretrainConfig = serde_json::from_str(
        r#"{"embedder": {"variant": "full", "item_dim": 8, "side_dim": 4},
            "encoder": {"kind": "trmpp", "layers": 1, "width": 16, "heads": 2, "dropout": 0.0}}"#,
    )
    .unwrap();
    PretrainModel::new(
        &cfg,
        &VOCAB,
        seeded_var_builder(vm, 1, DType::F32, &Device::Cpu),
    )
    .unwrap()
}

fn model(
    adapter: &AdapterConfig,
    placement: Placement,
    adapter_vm: &VarMap,
    enc_vm: &VarMap,
) -> SoftPromptModel {
    let mut cfg = LlmConfig::tiny(40);
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    let lm_vm = VarMap::new();
    let lm_vb = seeded_var_builder(&lm_vm, 2, DType::F32, &Device::Cpu);
    // Frozen LM: plain tensors, not variables.
    CausalLm::new(&cfg, lm_vb).unwrap();
    let frozen: std::collections::HashMap<_, _> = lm_vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let lm = CausalLm::new(
        &cfg,
        VarBuilder::from_tensors(frozen, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let adapter = Adapter::new(
        adapter,
        16,
        32,
        seeded_var_builder(adapter_vm, 3, DType::F32, &Device::Cpu),
    )
    .unwrap();
    SoftPromptModel {
        lm,
        user: Some(UserPrompt {
            encoder: encoder(enc_vm),
            adapter,
            placement,
        }),
    }
}

fn chats() -> Vec<EncodedChat> {
    vec![
        EncodedChat {
            ids: vec![1, 5, 6, 2, 7, 8, 9, 2],
            targets: vec![true, false, false, true, false, true, true, true],
            system_len: 4,
        },
        EncodedChat {
            ids: vec![1, 5, 6, 2, 3],
            targets: vec![true, false, false, true, true],
            system_len: 4,
        },
    ]
}

#[test]
fn loss_counts_targets_and_trains_only_the_adapter() {
    for (adapter, placement) in [
        (AdapterConfig::default(), Placement::Start),
        (AdapterConfig::default(), Placement::AfterSystem),
        (
            AdapterConfig::MeanPool {
                recent: 2,
                pooled: 2,
                hidden: 16,
            },
            Placement::Start,
        ),
        (
            AdapterConfig::QFormer {
                queries: 3,
                heads: 4,
            },
            Placement::Start,
        ),
    ] {
        let (avm, evm) = (VarMap::new(), VarMap::new());
        let m = model(&adapter, placement, &avm, &evm);
        let seq = batch(&[4, 3], 5, 9);
        let chats = chats();
        let ls = m.loss(Some(&seq), &chats, &AnswerLoss::default()).unwrap();
        // Every target token with a token or soft token before it: all of them when the soft
        // token leads, all but each row's first token otherwise.
        let expected = if placement == Placement::Start {
            5 + 3
        } else {
            4 + 2
        };
        assert_eq!(ls.count, expected);
        let first = ls.sum.to_scalar::<f32>().unwrap() / ls.count as f32;
        assert!((first - (40f32).ln()).abs() < 0.5, "{first}");
        let grads = ls.sum.backward().unwrap();
        for v in avm.all_vars() {
            assert!(
                grads.get(v.as_tensor()).is_some(),
                "adapter variable without gradient"
            );
        }
        for v in evm.all_vars() {
            assert!(
                grads.get(v.as_tensor()).is_none(),
                "the frozen encoder got a gradient"
            );
        }

        // A few SGD steps on the adapter alone lower the loss: the soft tokens matter.
        let vars: Vec<Var> = avm.all_vars();
        let mut loss = first;
        for _ in 0..30 {
            let ls = m.loss(Some(&seq), &chats, &AnswerLoss::default()).unwrap();
            loss = ls.sum.to_scalar::<f32>().unwrap() / ls.count as f32;
            let g = ls.sum.backward().unwrap();
            for v in &vars {
                let step = (g.get(v.as_tensor()).unwrap() * 0.05).unwrap();
                v.set(&(v.as_tensor() - step).unwrap()).unwrap();
            }
        }
        assert!(
            loss < first - 0.05,
            "{adapter:?} {placement:?}: {first} -> {loss}"
        );
    }
}

#[test]
fn unlikelihood_adds_a_term_only_where_an_answer_could_repeat_itself() {
    let (avm, evm) = (VarMap::new(), VarMap::new());
    let m = model(&AdapterConfig::default(), Placement::Start, &avm, &evm);
    let seq = batch(&[4, 3], 5, 9);
    let sum = |chats: &[EncodedChat], unlikelihood: f64| {
        let ls = m
            .loss(Some(&seq), chats, &AnswerLoss { unlikelihood })
            .unwrap();
        (ls.sum.to_scalar::<f32>().unwrap(), ls.count)
    };
    // The first chat's last target span (8 9 2) has earlier tokens that are not the target.
    let chats = chats();
    let (ce, n) = sum(&chats, 0.0);
    let (with_ul, n_ul) = sum(&chats, 1.0);
    let (with_ul2, _) = sum(&chats, 2.0);
    assert_eq!(n, n_ul, "unlikelihood adds no targets");
    assert!(with_ul > ce, "{with_ul} vs {ce}");
    // The term is linear in its weight.
    let (one, two) = (with_ul - ce, with_ul2 - ce);
    assert!(
        (two - 2.0 * one).abs() < 1e-4 * two.abs().max(1.0),
        "{one} {two}"
    );
    // Spans of one token, or of one token repeated (a repeat the data asks for), cost nothing.
    let repeat = EncodedChat {
        ids: vec![1, 5, 6, 7, 7, 7],
        targets: vec![true, false, false, true, true, true],
        system_len: 0,
    };
    let repeats = vec![repeat.clone(), repeat];
    assert_eq!(sum(&repeats, 0.0), sum(&repeats, 1.0));
    // Its gradient reaches the adapter.
    let ls = m
        .loss(Some(&seq), &chats, &AnswerLoss { unlikelihood: 1.0 })
        .unwrap();
    let grads = ls.sum.backward().unwrap();
    assert!(
        avm.all_vars()
            .iter()
            .all(|v| grads.get(v.as_tensor()).is_some())
    );
}

#[test]
fn batched_generation_equals_one_row_at_a_time() {
    let (avm, evm) = (VarMap::new(), VarMap::new());
    let m = model(&AdapterConfig::default(), Placement::Start, &avm, &evm);
    let seq = batch(&[4, 2, 5], 5, 3);
    let prompts: Vec<EncodedChat> = [vec![1u32, 5, 6], vec![1, 7], vec![1, 8, 9, 10, 11]]
        .into_iter()
        .map(|ids| EncodedChat {
            targets: vec![false; ids.len()],
            ids,
            system_len: 0,
        })
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: 6,
        stop_tokens: vec![],
    };
    let together = m.generate(Some(&seq), &prompts, &cfg).unwrap();
    for (r, prompt) in prompts.iter().enumerate() {
        let one = common::select_rows(&seq, &[r]);
        let alone = m
            .generate(Some(&one), std::slice::from_ref(prompt), &cfg)
            .unwrap();
        assert_eq!(together[r], alone[0], "row {r}");
        assert_eq!(alone[0].len(), 6);
    }
    // A stop token ends a row and is not part of its output.
    let stop = together[0][2];
    let cut = m
        .generate(
            Some(&seq),
            &prompts,
            &GenerateConfig {
                max_new_tokens: 6,
                stop_tokens: vec![stop],
            },
        )
        .unwrap();
    let expect: Vec<u32> = together[0]
        .iter()
        .copied()
        .take_while(|&t| t != stop)
        .collect();
    assert_eq!(cut[0], expect);
}
