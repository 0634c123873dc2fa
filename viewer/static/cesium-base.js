// Where CesiumJS finds its workers and assets (a file, not an inline script: the Content-Security-Policy allows none).
window.CESIUM_BASE_URL = "/cesium/";
