// Stands in for neuroglancer's Python backend, inside the browser.
//
// The client that the `neuroglancer` package ships is its Python-integrated build. Besides the
// viewer state (which it takes from the URL fragment when one is given) it expects a Python
// server next to it: an event stream of configuration at `.../events/<token>`, credentials
// from `.../credentials/<token>`, and POSTs of state and actions. diced serves no such backend,
// so this script (loaded before the bundles) answers those calls locally: the event stream
// opens and stays quiet, credentials are anonymous, state and action posts are accepted.
// Every other request (the DVID API, the bundles) goes out unchanged.
(function () {
  "use strict";
  const backend = /\/neuroglancer\/(events|credentials|state|action|volume_response)\/[^/?#]+/;

  function backendCall(url) {
    try {
      const path = new URL(String(url), window.location.href).pathname;
      const m = path.match(backend);
      return m ? m[1] : null;
    } catch (e) {
      return null;
    }
  }

  const RealEventSource = window.EventSource;
  class QuietEventSource extends EventTarget {
    constructor(url) {
      super();
      this.url = String(url);
      this.readyState = 0;
      this.onopen = null;
      this.onmessage = null;
      this.onerror = null;
      setTimeout(() => {
        if (this.readyState === 2) return;
        this.readyState = 1;
        const ev = new Event("open");
        if (this.onopen) this.onopen(ev);
        this.dispatchEvent(ev);
      }, 0);
    }
    close() {
      this.readyState = 2;
    }
  }
  window.EventSource = function (url, init) {
    if (backendCall(url) === "events") return new QuietEventSource(url);
    return new RealEventSource(url, init);
  };
  window.EventSource.prototype = RealEventSource.prototype;

  const realFetch = window.fetch.bind(window);
  let generation = 0;
  window.fetch = function (input, init) {
    const url = typeof input === "string" || input instanceof URL ? input : input.url;
    const call = backendCall(url);
    if (call === null) return realFetch(input, init);
    let body = "";
    if (call === "credentials") body = JSON.stringify({ generation: 1, credentials: {} });
    else if (call === "state") body = JSON.stringify({ g: String(++generation) });
    return Promise.resolve(
      new Response(body, { status: 200, headers: { "Content-Type": "application/json" } }),
    );
  };
})();
