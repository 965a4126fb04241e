//! The stage-2 model: a frozen encoder, an adapter and a causal LM. The encoder's states of a
//! user's context sequence become soft-prompt tokens (through the adapter) that are spliced into
//! the embedded chat text; the LM is trained on the reference's loss mask and decodes answers.
//! Without an encoder (text baselines), the chat text goes in alone.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use uqa_data::batch::SequenceBatch;

use crate::adapter::Adapter;
use crate::embedder::mask_tensor;
use crate::error::{CandleContext, ModelError, Result};
use crate::llm::chat::EncodedChat;
use crate::llm::generate::{GenerateConfig, greedy};
use crate::llm::{CausalLm, Mode, Padding, TokenMask, pad_rows};
use crate::loss::chunked::chunked_cross_entropy_sum;
use crate::loss::{AnswerLoss, Candidates, LossSum, SpanTokens, unlikelihood_sum};
use crate::pretrain::PretrainModel;

/// Where the soft tokens go in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Before everything (the reference: `[user_token; embed(input_ids)]`).
    #[default]
    Start,
    /// After the system turn.
    AfterSystem,
}

/// Vocabulary rows per chunk of the LM loss.
const LOSS_CHUNK: usize = 8192;

/// The encoder and adapter that turn a context sequence into soft tokens.
pub struct UserPrompt {
    pub encoder: PretrainModel,
    pub adapter: Adapter,
    pub placement: Placement,
}

impl UserPrompt {
    /// Soft tokens `[B, k, d_llm]` of a batch of context sequences. The encoder is frozen: its
    /// states are detached, so no gradient (and no gradient memory) reaches it.
    pub fn soft_tokens(&self, batch: &SequenceBatch) -> Result<Tensor> {
        let states = self.encoder.encode(batch, false)?.detach();
        let mask = mask_tensor(batch, states.dtype(), states.device())?;
        self.adapter.forward(&states, &mask)
    }
}

/// LM plus optional user prompt.
pub struct SoftPromptModel {
    pub lm: CausalLm,
    pub user: Option<UserPrompt>,
}

/// The embedded rows of a batch, padded, with their mask and (for training) label positions.
struct Assembled {
    x: Tensor,
    mask: TokenMask,
}

impl SoftPromptModel {
    /// Soft tokens when a user prompt is configured; `None` for text-only models. A missing or
    /// mismatched sequence batch is an error.
    fn soft(&self, seq: Option<&SequenceBatch>, rows: usize) -> Result<Option<Tensor>> {
        match (&self.user, seq) {
            (None, _) => Ok(None),
            (Some(_), None) => Err(ModelError::batch(
                "the model has a user encoder but the batch carries no context sequences",
            )),
            (Some(u), Some(b)) => {
                if b.lengths.len() != rows {
                    return Err(ModelError::batch(format!(
                        "{} context sequences for {rows} conversations",
                        b.lengths.len()
                    )));
                }
                Ok(Some(u.soft_tokens(b)?))
            }
        }
    }

    fn insert_at(&self, chat: &EncodedChat) -> usize {
        match self.user.as_ref().map(|u| u.placement) {
            Some(Placement::AfterSystem) => chat.system_len,
            _ => 0,
        }
    }

    /// Each row: token embeddings with the soft tokens spliced in at the placement, then padded.
    fn assemble(
        &self,
        chats: &[EncodedChat],
        soft: Option<&Tensor>,
        padding: Padding,
    ) -> Result<Assembled> {
        let lm = &self.lm;
        let dev = lm.device();
        let mut rows = Vec::with_capacity(chats.len());
        for (r, chat) in chats.iter().enumerate() {
            let ids = Tensor::new(chat.ids.as_slice(), dev)
                .ctx("chat ids")?
                .unsqueeze(0)
                .ctx("chat ids")?;
            let emb = lm
                .embed_tokens(&ids)
                .ctx("embedding the chat")?
                .squeeze(0)
                .ctx("chat")?;
            let row = match soft {
                None => emb,
                Some(s) => {
                    let p = self.insert_at(chat);
                    let s = s.get(r).ctx("soft tokens")?;
                    let n = chat.ids.len();
                    Tensor::cat(
                        &[
                            &emb.narrow(0, 0, p).ctx("splice")?,
                            &s,
                            &emb.narrow(0, p, n - p).ctx("splice")?,
                        ],
                        0,
                    )
                    .ctx("splicing the soft tokens")?
                }
            };
            rows.push(row);
        }
        let (x, mask) = pad_rows(&rows, padding).ctx("padding the batch")?;
        Ok(Assembled { x, mask })
    }

    /// Summed next-token cross-entropy over the target tokens of `chats` and their count. Each
    /// target token is predicted from the position before it (soft tokens are never targets).
    /// With `objective.unlikelihood > 0`, the weighted token-level unlikelihood of the tokens
    /// already written in each target span is added (`loss::unlikelihood`).
    pub fn loss(
        &self,
        seq: Option<&SequenceBatch>,
        chats: &[EncodedChat],
        objective: &AnswerLoss,
    ) -> Result<LossSum> {
        let soft = self.soft(seq, chats.len())?;
        let k = soft.as_ref().map_or(0, |s| s.dim(1).unwrap_or(0));
        let a = self.assemble(chats, soft.as_ref(), Padding::Right)?;
        let width = a.mask.len();
        let mut rows_idx = Vec::new();
        let mut labels = Vec::new();
        let mut candidates = Candidates::default();
        // Unlikelihood's candidates are only tracked when the term is on.
        let unlikelihood = objective.unlikelihood > 0.0;
        for (r, chat) in chats.iter().enumerate() {
            let p = self.insert_at(chat);
            let mut span = SpanTokens::default();
            for (j, (&id, &target)) in chat.ids.iter().zip(&chat.targets).enumerate() {
                // Position of token j in the spliced row, and of the token before it.
                let pos = if soft.is_some() && j >= p { j + k } else { j };
                if target && pos > 0 {
                    if unlikelihood {
                        candidates.push(labels.len(), id, span.earlier());
                    }
                    rows_idx.push((r * width + pos - 1) as u32);
                    labels.push(id);
                }
                if unlikelihood {
                    span.step(id, target);
                }
            }
        }
        let h = self
            .lm
            .forward(&a.x, &a.mask, None, Mode::Train)
            .ctx("LM forward")?;
        let d = self.lm.config().hidden_size;
        let dev = self.lm.device();
        let count = labels.len();
        let idx = Tensor::new(rows_idx.as_slice(), dev).ctx("label positions")?;
        let labels = Tensor::new(labels.as_slice(), dev).ctx("labels")?;
        let h = h
            .reshape((chats.len() * width, d))
            .and_then(|h| h.index_select(&idx, 0))
            .ctx("gathering labelled positions")?;
        let table = self.lm.output_table();
        let mut sum =
            chunked_cross_entropy_sum(&h, table, &labels, LOSS_CHUNK, None).ctx("LM loss")?;
        if unlikelihood {
            let ul = unlikelihood_sum(&h, table, &candidates).ctx("unlikelihood")?;
            sum = (sum + (ul * objective.unlikelihood).ctx("unlikelihood")?).ctx("LM loss")?;
        }
        Ok(LossSum { sum, count })
    }

    /// Greedy answers to the prompts (`chats` from `ChatFormat::encode_prompt`), batched with
    /// left padding and the KV cache.
    pub fn generate(
        &self,
        seq: Option<&SequenceBatch>,
        chats: &[EncodedChat],
        cfg: &GenerateConfig,
    ) -> Result<Vec<Vec<u32>>> {
        let soft = self.soft(seq, chats.len())?;
        let a = self.assemble(chats, soft.as_ref(), Padding::Left)?;
        greedy(&self.lm, &a.x, &a.mask, cfg).ctx("generation")
    }

    /// Next-token logits `[B, V]` after each prompt (left-padded batch, one forward pass): the
    /// CTR mode reads the "yes" and "no" columns.
    pub fn last_logits(
        &self,
        seq: Option<&SequenceBatch>,
        chats: &[EncodedChat],
    ) -> Result<Tensor> {
        let soft = self.soft(seq, chats.len())?;
        let a = self.assemble(chats, soft.as_ref(), Padding::Left)?;
        let h = self
            .lm
            .forward(&a.x, &a.mask, None, Mode::Infer)
            .ctx("LM forward")?;
        let last = h
            .narrow(1, a.mask.len() - 1, 1)
            .and_then(|h| h.squeeze(1))
            .ctx("last positions")?;
        self.lm.logits(&last).ctx("LM head")
    }

    /// Input tokens the LM reads per conversation (text plus soft tokens), the paper's Table 7.
    pub fn input_tokens(&self, chat: &EncodedChat) -> usize {
        chat.ids.len() + self.user.as_ref().map_or(0, |u| u.adapter.tokens())
    }

    pub fn device(&self) -> &Device {
        self.lm.device()
    }

    pub fn dtype(&self) -> DType {
        self.lm.dtype()
    }
}
