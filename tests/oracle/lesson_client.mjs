// The client of the Immer course lesson "Create a Simple WebSocket Server to Distribute Patches
// from Immer" (github.com/mweststrate/immer-gifts, tag lesson15), without React: the same
// state, the same reducer and the same socket handling, so the server sees exactly the frames
// the lesson app sends and the app's state evolves exactly as it would in the browser.
//
//   node lesson_client.mjs --url ws://127.0.0.1:8000/ [--user 5] [--package immer]
//   node lesson_client.mjs --print-server-state
//     prints `{ gifts }`, the default gifts every lesson client starts with, as one JSON line:
//     the document a server must start from (the lesson's later server.js does the same)
//
// What the lesson app does, and this script with it:
//   * state = { users, currentUser, gifts }; `users` and `currentUser` never leave the client;
//   * every action goes through `produceWithPatches(giftsRecipe)` and the patches are sent as
//     `JSON.stringify(patches)`: a bare JSON array, `undefined` values dropped (so cancelling a
//     reservation sends `{"op":"replace","path":["gifts",i,"reservedBy"]}` with no value), and
//     `[]` when the action changed nothing;
//   * every received frame is `JSON.parse`d and applied with `applyPatches` on top of the
//     client's own state (the APPLY_PATCHES action).
//
// Commands (stdin, one JSON object per line): dispatch {action}, raw {text} (send a frame as
// is), state, pause / resume (hold received frames, as a slow network would, then apply them
// in order), close. Events (stdout): open, sent {patches, state}, frame {data, state[, error]},
// queued {data}, state {state}, close {code}, error {message}.

import { commandLoop, emit, loadImmer, loadPackage, parseArgs, wire } from "./lib.mjs"

const args = parseArgs(process.argv.slice(2), {
  url: "",
  user: "5",
  package: "immer",
  "print-server-state": false,
})
const { immer } = loadImmer(args.package)
const WebSocket = loadPackage("ws")
const { produce, produceWithPatches, applyPatches } = immer

// -- src/misc/users.js -----------------------------------------------------------------------

const allUsers = [
  "🐶", "🐱", "🐭", "🐹", "🐰", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁", "🐮", "🐷", "🐸", "🐒", "🦇",
  "🦉", "🦅", "🦆", "🐦", "🐧", "🐔", "🐺", "🐗", "🐴", "🦄", "🐝", "🐛", "🦋", "🐌", "🐜", "🐢",
].map((name, id) => ({ id, name }))

// the app picks a random user per browser session; the test chooses it
const getCurrentUser = () => allUsers[Number(args.user)]

// -- src/misc/gifts.json (an array at lesson 15) ------------------------------------------------

const defaultGifts = [
  { id: "immer-license", description: "Immer license", image: "https://example.invalid/immer.png", reservedBy: 5 },
  { id: "egghead-subscription", description: "Egghead.io subscription", image: "https://example.invalid/egghead.jpg", reservedBy: 21 },
  { id: "circle-series", description: "The Complete Circle Series", image: "https://example.invalid/circle.jpg" },
]

// -- src/gifts.js ------------------------------------------------------------------------------

const giftsRecipe = (draft, action) => {
  switch (action.type) {
    case "ADD_GIFT": {
      const { id, description, image } = action
      draft.gifts.push({ id, description, image, reservedBy: undefined })
      break
    }
    case "TOGGLE_RESERVATION": {
      const gift = draft.gifts.find(gift => gift.id === action.id)
      if (!gift) return
      gift.reservedBy =
        gift.reservedBy === undefined
          ? draft.currentUser.id
          : gift.reservedBy === draft.currentUser.id
            ? undefined
            : gift.reservedBy
      break
    }
    case "RESET":
      draft.gifts = getInitialState().gifts
      break
    case "APPLY_PATCHES":
      return applyPatches(draft, action.patches)
  }
}

const giftsReducer = produce(giftsRecipe)
const patchGeneratingGiftsReducer = produceWithPatches(giftsRecipe)

function getInitialState() {
  return { users: allUsers, currentUser: getCurrentUser(), gifts: defaultGifts }
}

// -- what the server must start from: `{ gifts }` (users and currentUser stay in the client) --

if (args["print-server-state"]) {
  emit({ gifts: wire(defaultGifts) })
  process.exit(0)
}

// -- src/misc/useSocket.js + src/index.js, without React ---------------------------------------

let state = getInitialState()
let paused = false
const held = []

function useSocket(url, onMessage) {
  const socket = new WebSocket(url)
  socket.onmessage = event => onMessage(JSON.parse(event.data))
  socket.onopen = () => emit({ event: "open" })
  socket.onclose = event => {
    emit({ event: "close", code: event.code, reason: event.reason })
    process.exit(0)
  }
  socket.onerror = event => emit({ event: "error", message: String(event.message ?? event) })
  const send = data => socket.send(JSON.stringify(data))
  send.socket = socket
  return send
}

function onMessage(patches) {
  if (paused) {
    held.push(patches)
    emit({ event: "queued", data: patches })
    return
  }
  // setState(state => giftsReducer(state, { type: "APPLY_PATCHES", patches }))
  try {
    state = giftsReducer(state, { type: "APPLY_PATCHES", patches })
    emit({ event: "frame", data: patches, state: wire(state) })
  } catch (err) {
    // in the browser this is an uncaught error in a state updater: React unmounts the app
    emit({ event: "frame", data: patches, error: String(err), state: wire(state) })
  }
}

const send = useSocket(args.url, onMessage)

function dispatch(action) {
  const [nextState, patches] = patchGeneratingGiftsReducer(state, action)
  send(patches)
  state = nextState
  emit({ event: "sent", patches: wire(patches), state: wire(state) })
}

await commandLoop({
  dispatch: ({ action }) => dispatch(action),
  raw: ({ text }) => {
    send.socket.send(text)
    emit({ event: "sent", raw: text, state: wire(state) })
  },
  state: () => emit({ event: "state", state: wire(state) }),
  pause: () => {
    paused = true
    emit({ event: "paused" })
  },
  resume: () => {
    paused = false
    for (const patches of held.splice(0)) onMessage(patches)
    emit({ event: "resumed", state: wire(state) })
  },
  close: () => send.socket.close(),
})
