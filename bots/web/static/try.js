// The Try it page: send a typed message or a recorded voice note, read the reply's events as
// they come (Server-Sent Events in the POST's response, read with fetch), play the spoken reply,
// and rate or correct it. Every text from the server is set with textContent, never as HTML.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const form = $("try-form");
  if (!form) return;
  const csrf = form.querySelector('input[name="csrf"]').value;
  const maxBytes = Number(form.dataset.maxBytes);
  let turnId = null;
  let recorder = null;
  let busy = false;

  function say(text, error) {
    const status = $("try-status");
    status.textContent = text || "";
    status.hidden = !text;
    status.classList.toggle("error", Boolean(error));
  }

  function setBusy(on) {
    busy = on;
    $("try-send").disabled = on;
    $("try-record").disabled = on || recorder !== null;
    $("try-file").disabled = on;
  }

  // The exchange shown so far goes to the history (as text) before a new one starts.
  function archive() {
    const you = $("try-transcript").textContent || $("try-you").textContent;
    const reply = $("try-reply").textContent;
    if (you || reply) {
      const item = document.createElement("li");
      for (const [who, text] of [["you", you], ["Iris", reply]]) {
        const line = document.createElement("div");
        const label = document.createElement("span");
        label.className = "who";
        label.textContent = who;
        const words = document.createElement("bdi");
        words.textContent = text;
        line.append(label, " ", words);
        item.append(line);
      }
      $("try-history").prepend(item);
    }
    for (const id of ["try-you", "try-transcript", "try-reply", "try-meta", "try-feedback"]) $(id).textContent = "";
    $("try-heard").hidden = true;
    $("try-rating").hidden = true;
    $("try-fix").value = "";
    const audio = $("try-audio");
    audio.pause();
    audio.removeAttribute("src");
    audio.hidden = true;
    turnId = null;
  }

  function show(event, data) {
    switch (event) {
      case "transcript":
        $("try-transcript").textContent = data.text;
        $("try-heard").hidden = false;
        break;
      case "queued":
        say(data.text);
        break;
      case "reply":
        say("");
        $("try-reply").textContent = data.text;
        break;
      case "done":
        turnId = data.turn_id;
        $("try-reply").textContent = data.text;
        $("try-meta").textContent = `reply #${data.turn_id} · ${data.model} · ${data.ms} ms`;
        $("try-rating").hidden = false;
        break;
      case "spoken": {
        const audio = $("try-audio");
        audio.src = data.url;
        audio.hidden = false;
        audio.play().catch(() => {}); // a browser may refuse to play unasked: the controls stay
        break;
      }
      case "notice":
        say(data.text, true);
        break;
      default:
        break;
    }
  }

  function frame(text) {
    let event = "message";
    let data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    show(event, data ? JSON.parse(data) : {});
  }

  async function send(body, shown) {
    if (busy) return;
    archive();
    $("try-you").textContent = shown;
    setBusy(true);
    say("Sent; waiting for Iris…");
    try {
      const response = await fetch("/try/send", {
        method: "POST",
        body,
        headers: { "X-CSRF-Token": csrf },
        credentials: "same-origin",
      });
      if (!response.ok || !response.body) {
        say(await response.text(), true);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          frame(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
      if ($("try-status").textContent === "Sent; waiting for Iris…") say("");
    } catch (error) {
      say("The console could not be reached, or the answer was cut off; please try again.", true);
    } finally {
      setBusy(false);
    }
  }

  function sendAudio(blob, name) {
    if (!blob.size) {
      say("Nothing was recorded; check the microphone and try again.", true);
      return;
    }
    if (blob.size > maxBytes) {
      say(`That file is too large: the limit is ${form.dataset.maxMb} MB.`, true);
      return;
    }
    const body = new FormData();
    body.append("csrf", csrf);
    body.append("audio", blob, name);
    send(body, "🎤 voice note");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("try-text").value;
    const body = new FormData();
    body.append("csrf", csrf);
    body.append("text", text);
    send(body, text).then(() => {
      if (!$("try-status").classList.contains("error")) $("try-text").value = "";
    });
  });

  $("try-text").addEventListener("keydown", (event) => {
    if (event.ctrlKey && event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  $("try-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) sendAudio(file, file.name);
    event.target.value = "";
  });

  $("try-record").addEventListener("click", async () => {
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      say("This browser cannot record here (the microphone needs https, or the console on localhost).", true);
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      say(`The microphone is not available: ${error.message}`, true);
      return;
    }
    const types = ["audio/ogg;codecs=opus", "audio/webm;codecs=opus", "audio/webm"];
    const type = types.find((t) => MediaRecorder.isTypeSupported(t));
    const chunks = [];
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      const kind = recorder.mimeType || type || "audio/webm";
      recorder = null;
      $("try-stop").disabled = true;
      setBusy(false);
      sendAudio(new Blob(chunks, { type: kind }), kind.includes("ogg") ? "voice-note.ogg" : "voice-note.webm");
    });
    recorder.start();
    $("try-record").disabled = true;
    $("try-stop").disabled = false;
    say("Recording… press Stop to send.");
  });

  $("try-stop").addEventListener("click", () => {
    if (recorder && recorder.state !== "inactive") recorder.stop();
  });

  async function post(url, fields) {
    const body = new FormData();
    body.append("csrf", csrf);
    for (const [key, value] of Object.entries(fields)) body.append(key, value);
    try {
      const response = await fetch(url, { method: "POST", body, headers: { "X-CSRF-Token": csrf } });
      return { ok: response.ok, text: await response.text() };
    } catch (error) {
      return { ok: false, text: "The console could not be reached; nothing was stored." };
    }
  }

  async function feedback(url, fields) {
    const answer = await post(url, fields);
    const shown = $("try-feedback");
    shown.textContent = answer.text;
    shown.classList.toggle("error", !answer.ok);
    return answer.ok;
  }

  for (const id of ["try-up", "try-down"]) {
    $(id).addEventListener("click", (event) => {
      if (turnId !== null) feedback(`/try/rate/${turnId}`, { rating: event.currentTarget.dataset.rating });
    });
  }

  $("try-fix-send").addEventListener("click", async () => {
    if (turnId === null) return;
    if (await feedback(`/try/correct/${turnId}`, { text: $("try-fix").value })) $("try-fix").value = "";
  });

  $("try-reset").addEventListener("click", async () => {
    const answer = await post("/try/reset", {});
    archive();
    $("try-history").replaceChildren();
    say(answer.text, !answer.ok);
  });
})();
