// Site customisation of sao, the Tryton web client: its index.html loads
// custom.js and custom.css after sao itself. `make build` copies both beside
// it (node_modules/tryton-sao/); edit them here.
