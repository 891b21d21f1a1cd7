// Interface text in English and Chinese, chosen from the browser's language.
"use strict";
const TEXT = {
  en: {
    knowledgeBase: "Knowledge base", newChat: "New conversation", keyPrompt: "API key for this server",
    keySave: "Continue", keyWrong: "This key was rejected; check it and try again.", ask: "Ask",
    questionHint: "Ask a question about the documents", sources: "Sources", documents: "Documents",
    dropHere: "Drop files here, or choose:", addUrl: "Add URL", urlHint: "https://…", name: "Name",
    type: "Type", pages: "Pages", chunks: "Chunks", size: "Size", added: "Added", status: "Status",
    search: "Search", searchHint: "Search the chunks", reindex: "Re-index", delete: "Delete",
    howAnswered: "How this was answered", understoodAs: "Understood as:", refused: "Not in the documents",
    page: "page", showContext: "Show in context", hideContext: "Hide", thinking: "Answering…",
    uploading: "uploading", queued: "queued", indexing: "indexing", indexed: "indexed",
    unchanged: "unchanged", failed: "failed", "not indexed": "not indexed", score: "score",
    noDocuments: "No documents yet: upload some to ask about them.", tooLarge: "too large (limit {limit})",
    error: "Error", noHits: "Nothing found.", pagesRead: "{n} page(s)", ocrPages: "{n} by OCR",
    tablesFound: "{n} table(s)",
  },
  zh: {
    knowledgeBase: "知识库", newChat: "新对话", keyPrompt: "此服务器的 API 密钥", keySave: "继续",
    keyWrong: "密钥被拒绝，请检查后重试。", ask: "提问", questionHint: "就文档提一个问题", sources: "来源",
    documents: "文档", dropHere: "把文件拖到这里，或选择：", addUrl: "添加网址", urlHint: "https://…",
    name: "名称", type: "类型", pages: "页数", chunks: "片段", size: "大小", added: "添加时间", status: "状态",
    search: "搜索", searchHint: "搜索片段", reindex: "重新索引", delete: "删除", howAnswered: "回答方式",
    understoodAs: "理解为：", refused: "文档中没有答案", page: "第", showContext: "查看上下文", hideContext: "收起",
    thinking: "正在回答…", uploading: "上传中", queued: "排队中", indexing: "索引中", indexed: "已索引",
    unchanged: "未变化", failed: "失败", "not indexed": "未索引", score: "得分",
    noDocuments: "还没有文档：上传后即可提问。", tooLarge: "文件太大（上限 {limit}）", error: "错误",
    noHits: "没有找到。", pagesRead: "{n} 页", ocrPages: "其中 {n} 页经 OCR 识别", tablesFound: "{n} 个表格",
  },
};
const LANG = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";

function t(key, values = {}) {
  const text = TEXT[LANG][key] ?? TEXT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function translatePage() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  document.getElementById("question").placeholder = t("questionHint");
  document.getElementById("url").placeholder = t("urlHint");
  document.getElementById("search").placeholder = t("searchHint");
}
